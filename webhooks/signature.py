"""Webhook credentials, verified on raw bytes: JIRA Cloud's signature and a URL token. Pure functions."""

from __future__ import annotations

import hashlib
import hmac
import re

_HEX = re.compile(r"[0-9a-f]+")


def _bytes(text: str) -> bytes:
    # Whatever a client sent (any code point, even a lone surrogate) becomes bytes to compare.
    return text.encode("utf-8", "surrogatepass")


def sign(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature`` value JIRA Cloud sends for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(_bytes(secret), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> str | None:
    """None if ``header`` signs ``body`` with ``secret``; else the reason it does not.

    The comparison is constant-time, on bytes. A header that is not ``sha256=<hex digest>``
    (non-ASCII, empty, another method) is refused with a reason, never raises.
    """
    if not header:
        return "missing X-Hub-Signature header"
    method, _, digest = header.strip().partition("=")
    digest = digest.lower()
    if method.lower() != "sha256" or not _HEX.fullmatch(digest):
        return "X-Hub-Signature must be sha256=<hex digest>"
    expected = hmac.new(_bytes(secret), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), _bytes(digest)):
        return "signature does not match the body"
    return None


def verify_token(token: str, given: str | None) -> str | None:
    """None if ``given`` (the ``?token=`` of the webhook's URL) is ``token``; else the reason it is not.

    The comparison is constant-time, on bytes.
    """
    if not given:
        return "missing token: the webhook URL must carry ?token=<token>"
    if not hmac.compare_digest(_bytes(token), _bytes(given)):
        return "token does not match"
    return None
