"""What the service remembers of each ticket, and the per-ticket decision lock.

Decisions on one ticket are made one at a time (the lock), so reading the
memory, deciding and writing the memory back cannot interleave. The lock is
held for Redis work only, never across a call to JIRA or SendGrid, so a job
that waits for it waits milliseconds.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

from redis import Redis
from redis.exceptions import LockError

from .. import defaults
from .connection import text
from ..exceptions import TicketBusy
from ..core.lifecycle import TicketMemory


class TicketStore:
    """Ticket memory in ``relance:ticket:<KEY>``; it expires ``ttl`` seconds after the last write."""

    def __init__(self, redis: Redis, ttl: int = defaults.RETENTION_SECONDS,
                 lock_wait: float = defaults.LOCK_WAIT_SECONDS):
        self.redis = redis
        self.ttl = int(ttl)
        self.lock_wait = lock_wait

    @staticmethod
    def key(ticket: str) -> str:
        return f"relance:ticket:{ticket}"

    @contextmanager
    def lock(self, ticket: str):
        """Hold the ticket's decision lock; raise TicketBusy after ``lock_wait`` seconds of waiting.

        The lock expires LOCK_SECONDS after it was taken, should its holder die.
        """
        lock = self.redis.lock(f"relance:lock:{ticket}", timeout=defaults.LOCK_SECONDS,
                               blocking_timeout=self.lock_wait)
        if not lock.acquire():
            raise TicketBusy(f"{ticket}: another job held the ticket's lock for {self.lock_wait}s")
        try:
            yield
        finally:
            try:
                lock.release()
            except LockError:   # expired meanwhile: nothing to release
                pass

    def memory(self, ticket: str) -> TicketMemory:
        raw = self.redis.hmget(self.key(ticket), TicketMemory.FIELDS)
        return TicketMemory.from_dict(dict(zip(TicketMemory.FIELDS, map(text, raw))))

    def known(self, ticket: str) -> bool:
        """True while relance remembers the ticket (it was seen within the retention)."""
        return bool(self.redis.exists(self.key(ticket)))

    def snapshot(self, ticket: str) -> dict | None:
        raw = self.redis.hget(self.key(ticket), "snapshot")
        return json.loads(raw) if raw else None

    def count_entry(self, ticket: str, state: str, pipe=None) -> None:
        """Count one more entry of the ticket into ``state`` (how often it was reopened, say)."""
        p = pipe or self.redis
        p.hincrby(self.key(ticket), f"entered:{state}", 1)
        p.expire(self.key(ticket), self.ttl)

    def entries(self, ticket: str, state: str) -> int:
        return int(self.redis.hget(self.key(ticket), f"entered:{state}") or 0)

    def save(self, ticket: str, memory: TicketMemory, snapshot: dict | None, pipe=None) -> None:
        mapping = memory.to_dict()
        if snapshot is not None:
            mapping["snapshot"] = json.dumps(snapshot, ensure_ascii=False)
        p = pipe or self.redis
        p.hset(self.key(ticket), mapping=mapping)
        p.expire(self.key(ticket), self.ttl)

    def touch(self, ticket: str, pipe=None) -> None:
        """Keep the ticket's memory for another ``ttl`` seconds (it had activity)."""
        (pipe or self.redis).expire(self.key(ticket), self.ttl)
