"""What the service remembers of each ticket, and the per-ticket lock.

Events of one ticket are processed one at a time (the lock), so reading the
memory, deciding and writing the memory back cannot interleave.
"""

from __future__ import annotations

import json

from redis import Redis

from . import defaults
from .connection import text
from .lifecycle import TicketMemory


class TicketStore:
    def __init__(self, redis: Redis, lock_seconds: float = defaults.JOB_TIMEOUT_SECONDS):
        self.redis = redis
        # A job never outlives its timeout, so neither does a dead job's lock by much.
        self.lock_seconds = lock_seconds + defaults.HEARTBEAT_GRACE_SECONDS

    @staticmethod
    def key(ticket: str) -> str:
        return f"relance:ticket:{ticket}"

    def lock(self, ticket: str):
        """A Redis lock held while one event of the ticket is processed; expires if its holder dies."""
        return self.redis.lock(f"relance:lock:{ticket}", timeout=self.lock_seconds,
                               blocking_timeout=self.lock_seconds)

    def memory(self, ticket: str) -> TicketMemory:
        raw = self.redis.hmget(self.key(ticket), TicketMemory.FIELDS)
        return TicketMemory.from_dict(dict(zip(TicketMemory.FIELDS, map(text, raw))))

    def snapshot(self, ticket: str) -> dict | None:
        raw = self.redis.hget(self.key(ticket), "snapshot")
        return json.loads(raw) if raw else None

    def count_entry(self, ticket: str, state: str, pipe=None) -> None:
        """Count one more entry of the ticket into ``state`` (how often it was reopened, say)."""
        (pipe or self.redis).hincrby(self.key(ticket), f"entered:{state}", 1)

    def entries(self, ticket: str, state: str) -> int:
        return int(self.redis.hget(self.key(ticket), f"entered:{state}") or 0)

    def save(self, ticket: str, memory: TicketMemory, snapshot: dict | None, pipe=None) -> None:
        mapping = memory.to_dict()
        if snapshot is not None:
            mapping["snapshot"] = json.dumps(snapshot, ensure_ascii=False)
        (pipe or self.redis).hset(self.key(ticket), mapping=mapping)
