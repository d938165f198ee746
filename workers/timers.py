"""Durable timers in Redis, exact to the second.

One live timer per (rule, ticket). Pending timers sit in a sorted set scored by
their due time, with their generation in a hash beside it: arming or cancelling
is one round trip (MULTI), and costs about a hundred bytes of Redis. A pump in
each worker process moves due timers onto the RQ queue; the job re-checks the
generation and the ticket before acting, so a timer cancelled or re-armed
meanwhile does nothing, and a timer queued twice (pump crash) acts once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass

from redis import Redis
from rq import Queue

from . import defaults
from .connection import text
from .queue import enqueue_timer

log = logging.getLogger("relance.timers")

PENDING_KEY = "relance:timers"          # zset: member -> due, epoch seconds
GENERATION_KEY = "relance:timers:gen"   # hash: member -> generation (while pending or firing)

# Drop a member from the pending set only if nobody re-armed it meanwhile.
_UNQUEUE = """
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
"""
# Forget a fired timer only if it is still this generation.
_RELEASE = """
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


def member(rule: str, ticket: str) -> str:
    return f"{rule}|{ticket}"


def split_member(value: str) -> tuple[str, str]:
    rule, _, ticket = value.partition("|")
    return rule, ticket


def job_id(value: str, generation: str) -> str:
    return f"timer-{hashlib.sha1(value.encode()).hexdigest()[:16]}-{generation}"


@dataclass(frozen=True)
class PendingTimer:
    rule: str
    ticket: str
    due: float
    generation: str


class TimerStore:
    def __init__(self, redis: Redis):
        self.redis = redis
        self._unqueue = redis.register_script(_UNQUEUE)
        self._release = redis.register_script(_RELEASE)

    def arm(self, rule: str, ticket: str, due: float, generation: str, pipe=None) -> None:
        """Arm (or re-arm, replacing) the timer of ``rule`` for ``ticket``; due in epoch seconds."""
        p = pipe or self.redis.pipeline()
        m = member(rule, ticket)
        p.zadd(PENDING_KEY, {m: due})
        p.hset(GENERATION_KEY, m, generation)
        if pipe is None:
            p.execute()

    def cancel(self, rule: str, ticket: str, pipe=None) -> None:
        p = pipe or self.redis.pipeline()
        m = member(rule, ticket)
        p.zrem(PENDING_KEY, m)
        p.hdel(GENERATION_KEY, m)
        if pipe is None:
            p.execute()

    def generation(self, value: str) -> str | None:
        return text(self.redis.hget(GENERATION_KEY, value))

    def release(self, value: str, generation: str) -> bool:
        """Forget a timer that has fired, unless it was re-armed meanwhile."""
        return bool(self._release(keys=[PENDING_KEY, GENERATION_KEY], args=[value, generation]))

    def get(self, rule: str, ticket: str) -> PendingTimer | None:
        m = member(rule, ticket)
        pipe = self.redis.pipeline()
        pipe.zscore(PENDING_KEY, m)
        pipe.hget(GENERATION_KEY, m)
        due, gen = pipe.execute()
        return PendingTimer(rule, ticket, due, text(gen)) if due is not None and gen else None

    def pending(self, limit: int = 100) -> list[PendingTimer]:
        """The next timers to fire, soonest first."""
        rows = self.redis.zrange(PENDING_KEY, 0, limit - 1, withscores=True)
        gens = self.redis.hmget(GENERATION_KEY, [m for m, _ in rows]) if rows else []
        return [PendingTimer(*split_member(text(m)), due, text(g)) for (m, due), g in zip(rows, gens) if g]

    def count(self) -> int:
        return self.redis.zcard(PENDING_KEY)

    def pump(self, queue: Queue, now: float, limit: int = defaults.TIMER_BATCH,
             timeout: float = defaults.JOB_TIMEOUT_SECONDS) -> int:
        """Queue a firing job for every timer due at ``now``; return how many were moved."""
        rows = self.redis.zrangebyscore(PENDING_KEY, "-inf", now, start=0, num=limit)
        if not rows:
            return 0
        gens = self.redis.hmget(GENERATION_KEY, rows)
        moved = 0
        for raw, gen in zip(rows, gens):
            m, g = text(raw), text(gen)
            if g is None:   # cancelled between the two reads
                self.redis.zrem(PENDING_KEY, m)
                continue
            # A job id per generation: a crash before the unqueue below re-queues nothing new.
            enqueue_timer(queue, job_id(m, g), m, g, timeout=timeout)
            self._unqueue(keys=[PENDING_KEY, GENERATION_KEY], args=[m, g])
            moved += 1
        return moved


class TimerPump(threading.Thread):
    """Background thread of a worker process: moves due timers onto the queue."""

    def __init__(self, store: TimerStore, queue: Queue, poll: float = defaults.TIMER_POLL_SECONDS,
                 timeout: float = defaults.JOB_TIMEOUT_SECONDS):
        super().__init__(name="relance-timer-pump", daemon=True)
        self.store, self.queue, self.poll, self.timeout = store, queue, poll, timeout
        self.stopping = threading.Event()

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                moved = self.store.pump(self.queue, time.time(), timeout=self.timeout)
                failures = 0
            except Exception:   # Redis away: keep trying, backing off; the timers are safe in Redis
                failures += 1
                wait = min(self.poll * 2 ** failures, 5.0)
                log.exception("timer pump failed (%d in a row); retrying in %.1fs", failures, wait)
                self.stopping.wait(wait)
                continue
            if moved < defaults.TIMER_BATCH:
                self.stopping.wait(self.poll)

    def stop(self) -> None:
        self.stopping.set()
