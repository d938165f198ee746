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

from redis import Redis

from . import defaults
from .connection import text

log = logging.getLogger("relance.audit")

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
        if pipe is None:
            p.execute()

    def timeline(self, ticket: str) -> list[dict]:
        """Entries oldest first: ``{"id", "kind", **data}``."""
        out = []
        for entry_id, fields in self.redis.xrange(self.key(ticket)):
            fields = {text(k): text(v) for k, v in fields.items()}
            out.append({"id": text(entry_id), "kind": fields["kind"], **json.loads(fields["data"])})
        return out
