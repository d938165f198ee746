"""Reply addresses: the signed ``Reply-To`` of customer emails. Pure: no I/O.

The local part names the ticket, the day the address was issued and a
fingerprint of the recipient, signed with RELANCE_SECRET_KEY::

    sup-42.k3f.ab2cd3ef.mnopqrstuvwxyz23@replies.example.com
    ^key   ^day ^recipient ^HMAC-SHA256 (80 bits)

All lower case (mail systems may fold the local part), at most 64 characters.
Nobody without the key can make an address for another ticket or recipient,
and the fingerprint lets a reply be matched to the address it was issued to
without keeping the address anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from email.utils import getaddresses

from ..exceptions import ReplyTokenExpired, ReplyTokenInvalid

_LOCAL = re.compile(r"([a-z][a-z0-9_]{0,30}-[0-9]{1,12})\.([0-9a-z]{1,6})\.([a-z2-7]{8})\.([a-z2-7]{16})")
_DAY = 86400


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().lower().rstrip("=")


def _key_bytes(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def normalized(address: str) -> str:
    """The form compared and fingerprinted: trimmed and lower-cased."""
    return address.strip().lower()


def fingerprint(secret: str | bytes, address: str) -> str:
    return _b32(hmac.new(_key_bytes(secret), b"to|" + normalized(address).encode(), hashlib.sha256).digest()[:5])


def _mac(secret: str | bytes, key: str, day: str, fp: str) -> str:
    message = f"reply|{key.upper()}|{day}|{fp}".encode()
    return _b32(hmac.new(_key_bytes(secret), message, hashlib.sha256).digest()[:10])


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


@dataclass(frozen=True)
class ReplyToken:
    """What a genuine reply address says: the ticket, when it was issued, to whom (a fingerprint)."""

    key: str            # the JIRA issue key, upper case
    issued_day: int     # days since the epoch
    recipient: str      # fingerprint of the address it was issued to

    def issued_to(self, secret: str | bytes, address: str) -> bool:
        """True if ``address`` is the one this reply address was sent to."""
        return hmac.compare_digest(self.recipient, fingerprint(secret, address))


def reply_address(secret: str | bytes, domain: str, key: str, recipient: str, now_s: float) -> str:
    """The Reply-To for an email about ticket ``key`` sent to ``recipient`` at ``now_s`` (epoch seconds)."""
    day = _base36(int(now_s // _DAY))
    fp = fingerprint(secret, recipient)
    local = f"{key.lower()}.{day}.{fp}.{_mac(secret, key, day, fp)}"
    if not _LOCAL.fullmatch(local):
        raise ValueError(f"{key!r} cannot be put in a reply address")
    return f"{local}@{domain}"


def read_reply_address(secret: str | bytes, domain: str, address: str, now_s: float, ttl_days: int) -> ReplyToken:
    """The token of a reply address relance issued, checked.

    Raises ReplyTokenInvalid if relance did not sign it (or it is not at ``domain``),
    ReplyTokenExpired if it was issued more than ``ttl_days`` ago.
    """
    local, _, at = normalized(address).rpartition("@")
    if at != domain.lower():
        raise ReplyTokenInvalid(f"{address[:80]!r} is not a reply address at {domain}")
    m = _LOCAL.fullmatch(local)
    if not m:
        raise ReplyTokenInvalid(f"{address[:80]!r} is not a reply address relance issued")
    key, day, fp, mac = m.groups()
    if not hmac.compare_digest(mac, _mac(secret, key, day, fp)):
        raise ReplyTokenInvalid(f"the signature of {address[:80]!r} does not match: forged, mistyped, "
                                "or signed with another RELANCE_SECRET_KEY")
    issued = int(day, 36)
    if now_s // _DAY - issued > ttl_days:
        raise ReplyTokenExpired(f"the reply address for {key.upper()} was issued {int(now_s // _DAY - issued)} days "
                                f"ago; it is valid for {ttl_days} days", key=key.upper())
    return ReplyToken(key=key.upper(), issued_day=issued, recipient=fp)


def find_reply_address(recipients, domain: str) -> str | None:
    """The first address at ``domain`` among ``recipients`` (header texts or bare addresses), or None."""
    for _, addr in getaddresses([r for r in recipients if r]):
        if addr.lower().endswith("@" + domain.lower()):
            return addr
    return None


@dataclass(frozen=True, repr=False)
class ReplyAddresses:
    """The signing key and REPLY_DOMAIN of one deployment (one JIRA site): makes and reads its reply addresses."""

    secret: str | bytes
    domain: str

    def address(self, key: str, recipient: str, now_s: float) -> str:
        """The Reply-To of an email about ticket ``key`` sent to ``recipient`` at ``now_s``."""
        return reply_address(self.secret, self.domain, key, recipient, now_s)

    def read(self, address: str, now_s: float, ttl_days: int) -> ReplyToken:
        """The checked token of ``address``; ReplyTokenInvalid or ReplyTokenExpired (see read_reply_address)."""
        return read_reply_address(self.secret, self.domain, address, now_s, ttl_days)

    def __repr__(self) -> str:
        return f"ReplyAddresses(domain={self.domain!r})"      # never the key
