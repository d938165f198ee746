"""Webhook signatures, verified on the raw bytes. Pure functions."""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature`` value JIRA Cloud sends for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> str | None:
    """None if ``header`` signs ``body`` with ``secret``; else the reason it does not.

    The comparison is constant-time.
    """
    if not header:
        return "missing X-Hub-Signature header"
    method, _, digest = header.strip().partition("=")
    if method.lower() != "sha256" or not digest:
        return "X-Hub-Signature must be sha256=<hex digest>"
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, digest.lower()):
        return "signature does not match the body"
    return None
