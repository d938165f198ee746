"""Webhook deliveries kept in Redis until processed: the dedupe and the payload store.

A delivery is stored under its id before its job is queued; the job reads it
back by id. Its ``done`` mark makes a second run of the same delivery a no-op.

An accepted body is kept until it is processed (at most the retention); once
processed, it and its mark are kept DELIVERY_TTL for dedupe and inspection.
"""

from __future__ import annotations

import hashlib
import re

from redis import Redis

from .. import defaults
from .connection import text

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def delivery_id(header_value: str | None, body: bytes) -> str:
    """The delivery's identity: JIRA's X-Atlassian-Webhook-Identifier, else a hash of the body.

    Always letters, digits, ``_`` and ``-`` (what RQ job ids accept).
    """
    if header_value and _SAFE_ID.match(header_value.strip()):
        return header_value.strip()
    raw = header_value.strip().encode() if header_value else body
    prefix = "h-" if header_value else "b-"
    return prefix + hashlib.sha256(raw).hexdigest()[:40]


class DeliveryStore:
    """Payloads of accepted deliveries, by id, with their decision (``:plan``) and outcome (``:done``)."""

    def __init__(self, redis: Redis, ttl: int = defaults.DELIVERY_TTL_SECONDS,
                 keep: int = defaults.RETENTION_SECONDS):
        self.redis = redis
        self.ttl = int(ttl)                  # after processing
        self.keep = int(max(keep, ttl))      # until processing

    @staticmethod
    def key(did: str) -> str:
        return f"relance:delivery:{did}"

    def put(self, did: str, body: bytes) -> bool:
        """Store the body; False if this delivery id was seen before (a redelivery)."""
        return bool(self.redis.set(self.key(did), body, nx=True, ex=self.keep))

    def body(self, did: str) -> bytes | None:
        return self.redis.get(self.key(did))

    def put_post(self, did: str, content_type: str, body: bytes) -> bool:
        """Store an HTTP post with its Content-Type (a multipart's boundary is in it), as
        ``Content-Type: <ct>\\r\\n\\r\\n<body>``; False if this delivery id was seen before."""
        return self.put(did, self.as_post(content_type, body))

    @staticmethod
    def as_post(content_type: str, body: bytes) -> bytes:
        """What ``put_post`` stores, and ``post`` reads back."""
        return b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body

    def post(self, did: str) -> tuple[str, bytes] | None:
        """``(content_type, body)`` of a post stored by put_post, or None if it is not (or no longer) kept."""
        stored = self.body(did)
        if stored is None:
            return None
        head, _, body = stored.partition(b"\r\n\r\n")
        return head.removeprefix(b"Content-Type: ").decode("latin-1"), body

    def plan(self, did: str) -> bytes | None:
        """The decision stored for the delivery, if one was made."""
        return self.redis.get(self.key(did) + ":plan")

    def save_plan(self, did: str, plan: bytes, pipe) -> None:
        pipe.set(self.key(did) + ":plan", plan, ex=self.keep)

    def is_done(self, did: str) -> bool:
        return bool(self.redis.exists(self.key(did) + ":done"))

    def mark_done(self, did: str, outcome: str) -> None:
        """Record the outcome; body and plan are then kept DELIVERY_TTL more, not the whole retention."""
        pipe = self.redis.pipeline()
        pipe.set(self.key(did) + ":done", outcome, ex=self.ttl)
        pipe.expire(self.key(did), self.ttl)
        pipe.expire(self.key(did) + ":plan", self.ttl)
        pipe.execute()

    def keep_for_retry(self, did: str) -> None:
        """A delivery whose job gave up: keep its body and decision for the whole retention."""
        pipe = self.redis.pipeline()
        pipe.expire(self.key(did), self.keep)
        pipe.expire(self.key(did) + ":plan", self.keep)
        pipe.execute()

    def outcome(self, did: str) -> str | None:
        return text(self.redis.get(self.key(did) + ":done"))
