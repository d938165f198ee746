"""Webhook credentials, verified on raw bytes: JIRA Cloud's signature, a URL token and SendGrid's
signature. Pure functions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from workers import defaults

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


# SendGrid signs a post (Event Webhook, and Inbound Parse under a security policy) with ECDSA P-256 /
# SHA-256 over the timestamp header's text followed by the raw body, base64 DER in the signature header.
# sendgrid.helpers.eventwebhook.EventWebhook takes the body as str and encodes it as UTF-8, so it can
# not check an Inbound Parse post whose parts are in other charsets or binary; verify_sendgrid uses
# `cryptography`, which it is built on, on the bytes as received.
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
_DIGITS = re.compile(r"[0-9]{1,12}")
_KEY_SEPARATORS = re.compile(r"[\s,]+")


@lru_cache(maxsize=8)
def sendgrid_keys(text: str) -> tuple[ec.EllipticCurvePublicKey, ...]:
    """The P-256 public keys in SENDGRID_WEBHOOK_PUBLIC_KEY: each base64 DER as SendGrid shows it,
    separated by commas or spaces (the Event Webhook and an Inbound Parse security policy each have
    their own key pair). Raises ValueError, saying which key is not one."""
    keys = []
    for n, part in enumerate(filter(None, _KEY_SEPARATORS.split(text.strip())), 1):
        try:
            key = serialization.load_der_public_key(base64.b64decode(part, validate=True))
        except ValueError as e:         # binascii.Error (not base64) and DER errors are ValueErrors
            raise ValueError(f"key {n} is not a base64 DER public key as SendGrid shows it: {e}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise ValueError(f"key {n} is not an ECDSA P-256 public key")
        keys.append(key)
    if not keys:
        raise ValueError("no key given")
    return tuple(keys)


def verify_sendgrid(public_key: str, timestamp: str | None, body: bytes, signature: str | None,
                    now: float | None = None, max_age: float = defaults.SENDGRID_SIGNATURE_MAX_AGE_SECONDS
                    ) -> str | None:
    """None if ``signature`` (the signature header) signs ``timestamp`` (the timestamp header) followed
    by ``body`` under one of the keys of ``public_key`` (see sendgrid_keys); else the reason it does not.

    With ``now`` (epoch seconds), a timestamp more than ``max_age`` old or more than
    MAX_CLOCK_AHEAD_SECONDS ahead is refused too. Never raises on what a client sent; raises
    ValueError for a bad ``public_key`` (check_config refuses those at start).
    """
    keys = sendgrid_keys(public_key)
    if not signature:
        return f"missing {SENDGRID_SIGNATURE} header"
    if not timestamp:
        return f"missing {SENDGRID_TIMESTAMP} header"
    if not _DIGITS.fullmatch(timestamp.strip()):
        return f"{SENDGRID_TIMESTAMP} must be Unix seconds"
    try:
        der = base64.b64decode(signature.strip(), validate=True)
    except ValueError:
        return f"{SENDGRID_SIGNATURE} is not base64"
    message = timestamp.strip().encode() + body
    for key in keys:
        try:
            key.verify(der, message, ec.ECDSA(hashes.SHA256()))
            break
        except InvalidSignature:    # also a signature that is not DER
            continue
    else:
        return "signature does not match the timestamp and body"
    if now is not None:
        age = now - int(timestamp)
        if age > max_age:
            return (f"signed {age / 86400:.1f} days ago: older than SendGrid's retries "
                    f"({max_age / 86400:g} days), so a replay")
        if age < -defaults.MAX_CLOCK_AHEAD_SECONDS:
            return f"signed {-age:.0f} s in the future: check this server's clock"
    return None
