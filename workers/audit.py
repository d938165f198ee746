"""Each ticket's timeline: deliveries, transitions, rules fired or skipped, timers, effects.

Kept as a capped Redis stream per ticket, newest last.
"""

from __future__ import annotations

import json
import logging

from redis import Redis

from . import defaults
from .connection import text

log = logging.getLogger("relance.audit")


class Audit:
    def __init__(self, redis: Redis, maxlen: int = defaults.AUDIT_MAXLEN):
        self.redis = redis
        self.maxlen = maxlen

    @staticmethod
    def key(ticket: str) -> str:
        return f"relance:audit:{ticket}"

    def record(self, ticket: str | None, kind: str, pipe=None, **data) -> None:
        """Append one entry to the ticket's timeline (and the log)."""
        log.info("%s %s %s", ticket or "-", kind, json.dumps(data, default=str, ensure_ascii=False))
        if not ticket:
            return
        fields = {"kind": kind, "data": json.dumps(data, default=str, ensure_ascii=False)}
        (pipe or self.redis).xadd(self.key(ticket), fields, maxlen=self.maxlen, approximate=True)

    def timeline(self, ticket: str) -> list[dict]:
        """Entries oldest first: ``{"id", "kind", **data}``."""
        out = []
        for entry_id, fields in self.redis.xrange(self.key(ticket)):
            fields = {text(k): text(v) for k, v in fields.items()}
            out.append({"id": text(entry_id), "kind": fields["kind"], **json.loads(fields["data"])})
        return out
