"""SendGrid events relance has taken, by event: the dedupe of the Event Webhook.

SendGrid redelivers a batch it got no 2xx for, and the same event may come in two
batches. Each event is recorded once (``relance:mail-event:<ref>``) in the same
transaction as its timeline entry and its count, with the rules it fires and the
facts their templates read; ``done`` once those rules were performed. A job that
dies between the two finds the record and performs the rules (the effects ledger
skips what was done). Records expire MAIL_EVENT_TTL_SECONDS after they are taken.
"""

from __future__ import annotations

import json

from redis import Redis

from .. import defaults
from .connection import text

PREFIX = "mail-"        # effect ids of rules an email event fires: mail-<ref>:<rule>:<index>


class MailEventStore:
    def __init__(self, redis: Redis, ttl: int = defaults.MAIL_EVENT_TTL_SECONDS):
        self.redis = redis
        self.ttl = int(ttl)

    @staticmethod
    def key(ref: str) -> str:
        return f"relance:mail-event:{ref}"

    def get(self, ref: str) -> dict | None:
        """``{"ticket", "rules", "facts", "done"}`` of a recorded event, or None if never taken (or forgotten)."""
        raw = {text(k): text(v) for k, v in self.redis.hgetall(self.key(ref)).items()}
        if not raw:
            return None
        return {"ticket": raw.get("ticket"), "rules": json.loads(raw.get("rules") or "[]"),
                "facts": json.loads(raw.get("facts") or "{}"), "done": raw.get("done") == "1"}

    def record(self, ref: str, ticket: str, rules: list[str], facts: dict, pipe) -> None:
        """Take the event (in the caller's transaction, with its timeline entry)."""
        pipe.hset(self.key(ref), mapping={"ticket": ticket, "rules": json.dumps(rules),
                                          "facts": json.dumps(facts, default=str, ensure_ascii=False), "done": "0"})
        pipe.expire(self.key(ref), self.ttl)

    def mark_done(self, ref: str) -> None:
        """The event's rules were performed: a later copy of the event is only a duplicate."""
        pipe = self.redis.pipeline()
        pipe.hset(self.key(ref), "done", "1")
        pipe.expire(self.key(ref), self.ttl)      # never a record without an expiry
        pipe.execute()

    def facts_for(self, prefix: str) -> dict | None:
        """The facts of the event whose rules have effect ids starting with ``prefix`` (``mail-<ref>``), for a
        retry of such a rule; None if ``prefix`` is not an email event's or the event is forgotten."""
        if not prefix.startswith(PREFIX):
            return None
        found = self.get(prefix[len(PREFIX):])
        return found["facts"] if found else None
