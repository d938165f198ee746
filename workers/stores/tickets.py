"""What the service remembers of each ticket, and the per-ticket decision lock.

Decisions on one ticket are made one at a time (the lock), so reading the
memory, deciding and writing the memory back cannot interleave. The lock is
held for Redis work only, never across a call to JIRA or SendGrid, so a job
that waits for it waits milliseconds.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import LockError

from .. import defaults
from .connection import RELEASE_IF_OWNER, run_script, text
from ..exceptions import TicketBusy
from ..core.lifecycle import TicketMemory


@dataclass(frozen=True)
class TicketView:
    """What relance remembers of a ticket, read in one go: whether it does, its memory, its snapshot
    and how often it was reopened."""

    known: bool
    memory: TicketMemory
    snapshot: dict | None
    times_reopened: int


class TicketStore:
    """Ticket memory in ``relance:ticket:<KEY>``; it expires ``ttl`` seconds after the last write."""

    def __init__(self, redis: Redis, ttl: int = defaults.RETENTION_SECONDS,
                 lock_wait: float = defaults.LOCK_WAIT_SECONDS):
        self.redis = redis
        self.ttl = int(ttl)
        self.lock_wait = lock_wait
        self._unlock = redis.register_script(RELEASE_IF_OWNER)

    @staticmethod
    def key(ticket: str) -> str:
        return f"relance:ticket:{ticket}"

    @staticmethod
    def lock_key(ticket: str) -> str:
        return f"relance:lock:{ticket}"

    @contextmanager
    def lock(self, ticket: str):
        """Hold the ticket's decision lock; raise TicketBusy after ``lock_wait`` seconds of waiting.

        The lock expires LOCK_SECONDS after it was taken, should its holder die.
        """
        lock = self.redis.lock(self.lock_key(ticket), timeout=defaults.LOCK_SECONDS,
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

    def try_lock(self, tickets, wait: float = 0.0) -> dict[str, str]:
        """Take the decision locks of ``tickets`` that are free, all in one round trip, trying the busy ones
        again for up to ``wait`` seconds: {ticket: token} of the locks taken, to give back with ``unlock``.
        Each expires LOCK_SECONDS after it was taken, as ``lock``'s does."""
        wanted, held = list(dict.fromkeys(tickets)), {}
        deadline = time.monotonic() + wait
        while True:
            tokens = {t: uuid.uuid4().hex for t in wanted}
            pipe = self.redis.pipeline(transaction=False)
            for ticket, token in tokens.items():
                pipe.set(self.lock_key(ticket), token, nx=True, px=defaults.LOCK_SECONDS * 1000)
            for (ticket, token), took in zip(tokens.items(), pipe.execute()):
                if took:
                    held[ticket] = token
            wanted = [t for t in wanted if t not in held]
            if not wanted or time.monotonic() >= deadline:
                return held
            time.sleep(0.05)

    def unlock(self, tokens: dict[str, str], pipe=None) -> None:
        """Give back locks taken with ``try_lock`` (one that expired meanwhile is left alone)."""
        p = pipe or self.redis.pipeline(transaction=False)
        for ticket, token in tokens.items():
            run_script(self._unlock, [self.lock_key(ticket)], [token], p)
        if pipe is None:
            p.execute()

    _VIEW_FIELDS = (*TicketMemory.FIELDS, "snapshot", "entered:reopened")

    def views(self, tickets) -> dict[str, TicketView]:
        """What relance remembers of each of ``tickets``: one round trip for all."""
        wanted = list(dict.fromkeys(tickets))
        pipe = self.redis.pipeline(transaction=False)
        for ticket in wanted:
            pipe.exists(self.key(ticket))
            pipe.hmget(self.key(ticket), self._VIEW_FIELDS)
        found = pipe.execute() if wanted else []
        views = {}
        for i, ticket in enumerate(wanted):
            known, raw = found[2 * i], [text(v) for v in found[2 * i + 1]]
            fields = dict(zip(self._VIEW_FIELDS, raw))
            memory = TicketMemory.from_dict({k: fields[k] for k in TicketMemory.FIELDS})
            snapshot = json.loads(fields["snapshot"]) if fields["snapshot"] else None
            views[ticket] = TicketView(bool(known), memory, snapshot, int(fields["entered:reopened"] or 0))
        return views

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
