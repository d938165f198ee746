"""Each ticket's timeline: deliveries, transitions, rules fired or skipped, timers, effects.

Kept as a capped Redis stream per ticket, newest last, expiring ``ttl`` seconds
after its last entry. The log gets one line per entry without personal data
(recipients, names, email addresses): the ticket key says which ticket; the
timeline, behind the operator's credentials, says to whom.
"""

from __future__ import annotations

import json
import logging
import re
import time

from redis import Redis

from .. import defaults
from .connection import text

log = logging.getLogger("relance.audit")

RECENT_KEY = "relance:audit:recent"     # zset: ticket -> time of its latest entry (ms), the newest RECENT_MAX
RECENT_MAX = 1000
_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")

# Entry fields that may name a person; never written to the log at INFO.
PERSONAL_FIELDS = frozenset({"to", "recipients", "reporter", "assignee", "author", "by", "email"})
_EMAIL = re.compile(r"[^\s<>\"'(),;:]+@[^\s<>\"'(),;:]+")


def redact(value: str) -> str:
    """``value`` with anything that looks like an email address replaced by ``<email>``."""
    return _EMAIL.sub("<email>", value)


class Audit:
    def __init__(self, redis: Redis, maxlen: int = defaults.AUDIT_MAXLEN, ttl: int = defaults.RETENTION_SECONDS):
        self.redis = redis
        self.maxlen = maxlen
        self.ttl = int(ttl)

    @staticmethod
    def key(ticket: str) -> str:
        return f"relance:audit:{ticket}"

    def record(self, ticket: str | None, kind: str, pipe=None, **data) -> None:
        """Append one entry to the ticket's timeline (and a line without personal data to the log)."""
        if log.isEnabledFor(logging.INFO):
            public = {k: v for k, v in data.items() if k not in PERSONAL_FIELDS}
            log.info("%s %s", kind, redact(json.dumps(public, default=str, ensure_ascii=False)),
                     extra={"ticket": ticket})
        if not ticket:
            return
        fields = {"kind": kind, "data": json.dumps(data, default=str, ensure_ascii=False)}
        p = pipe or self.redis.pipeline(transaction=False)
        p.xadd(self.key(ticket), fields, maxlen=self.maxlen, approximate=True)
        p.expire(self.key(ticket), self.ttl)
        # The dashboard's "recent tickets": a bounded index, so it never scans keys.
        p.zadd(RECENT_KEY, {ticket: int(time.time() * 1000)})
        p.zremrangebyrank(RECENT_KEY, 0, -RECENT_MAX - 1)
        p.expire(RECENT_KEY, self.ttl)
        if pipe is None:
            p.execute()

    def timeline(self, ticket: str) -> list[dict]:
        """Entries oldest first: ``{"id", "kind", **data}``."""
        return [self._entry(i, f) for i, f in self.redis.xrange(self.key(ticket))]

    @staticmethod
    def _entry(entry_id, fields) -> dict:
        fields = {text(k): text(v) for k, v in fields.items()}
        return {"id": text(entry_id), "kind": fields["kind"], **json.loads(fields["data"])}

    def page(self, ticket: str, count: int = 100, before: str | None = None) -> tuple[list[dict], str | None]:
        """Up to ``count`` entries newest first, older than entry id ``before`` (None: the newest);
        and the id to pass as ``before`` for the next page (None on the last). One XREVRANGE."""
        top = "+" if before is None or not _ENTRY_ID.fullmatch(before) else f"({before}"
        rows = self.redis.xrevrange(self.key(ticket), max=top, min="-", count=count + 1)
        entries = [self._entry(i, f) for i, f in rows[:count]]
        return entries, (entries[-1]["id"] if len(rows) > count else None)

    def recent(self, limit: int = 50) -> list[tuple[str, float]]:
        """Tickets with the newest timeline entries: [(ticket, epoch seconds)], newest first."""
        return [(text(t), ms / 1000) for t, ms in self.redis.zrevrange(RECENT_KEY, 0, limit - 1, withscores=True)]
