"""Durable timers in Redis, exact to the second.

One live timer per (rule, ticket). Pending timers sit in a sorted set scored by
their due time, with their generation in a hash beside it: arming or cancelling
is one round trip (MULTI), and costs about two hundred bytes of Redis. A pump in
each worker process claims due timers (one Lua step) and queues jobs firing them,
TIMER_JOB_SIZE to a job, at the front of the queue: a due timer does not wait
behind queued deliveries. A timer stays in the set until it is done with, so none
is lost to a crash. The firing re-checks the generation and the ticket before
acting, so a timer cancelled or re-armed meanwhile does nothing, and a timer
queued twice acts once. These two keys are the timer index: the only keys
relance writes without a TTL (a third, the timers being fired, expires).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass

from redis import Redis
from rq import Queue

from .. import defaults
from .connection import run_script, text
from .queue import TIMER_BATCH_PREFIX, enqueue_timers

log = logging.getLogger("relance.timers")

PENDING_KEY = "relance:timers"          # zset: member -> due (or lease end while firing), epoch seconds
GENERATION_KEY = "relance:timers:gen"   # hash: member -> generation (while pending, firing or parked)
FIRING_KEY = "relance:timers:firing"    # zset: member -> lease end, while claimed and not yet done with
KEYS = [PENDING_KEY, GENERATION_KEY, FIRING_KEY]

# Claim due timers in one atomic step: a due timer stays in the pending set with its
# score moved to the end of a lease, so it is queued again if its job never releases
# it (a pump or worker that died, a job lost). A due member without a generation was
# cancelled; only then is it removed, in the same step, so a re-arm cannot be lost.
# Claimed timers are also marked firing (until the lease ends) for `relance timers`; that
# key expires (ARGV[4]) once no marker in it can still be current.
_CLAIM = """
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for i = 1, #due, 2 do
  local m = due[i]
  local g = redis.call('HGET', KEYS[2], m)
  if g then
    redis.call('ZADD', KEYS[1], ARGV[2], m)
    redis.call('ZADD', KEYS[3], ARGV[2], m)
    redis.call('EXPIRE', KEYS[3], ARGV[4])
    out[#out + 1] = m
    out[#out + 1] = g
    out[#out + 1] = due[i + 1]
  else
    redis.call('ZREM', KEYS[1], m)
  end
end
return out
"""
# Forget a fired timer only if it is still this generation.
_RELEASE = """
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 1
end
return 0
"""
# Set a timer's due time (ARGV[3]) and generation (ARGV[4]), if it is still generation ARGV[2]:
# a fired timer's next firing, or a timer whose job gave up, parked. It stays marked firing
# until then if ARGV[5] is 1 (its own job fires it).
_REARM = """
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  if ARGV[5] == '1' then
    redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
    redis.call('EXPIRE', KEYS[3], ARGV[6])
  else
    redis.call('ZREM', KEYS[3], ARGV[1])
  end
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
    def __init__(self, redis: Redis, lease: float = defaults.JOB_TIMEOUT_SECONDS + defaults.HEARTBEAT_GRACE_SECONDS):
        self.redis = redis
        self.lease = lease
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._rearm = redis.register_script(_REARM)

    @property
    def own_job_hold(self) -> float:
        """How long a timer's own job (one that failed in a firing job) may take through all its retries:
        its timer is held, marked firing, that long, so the pumps leave it to that job."""
        attempts = defaults.JOB_RETRIES + 1
        return sum(defaults.JOB_RETRY_INTERVALS_SECONDS) + attempts * (self.lease + defaults.MAINTENANCE_INTERVAL_SECONDS)

    @property
    def _firing_ttl(self) -> int:
        return int(max(self.own_job_hold, self.lease)) + 60

    def arm(self, rule: str, ticket: str, due: float, generation: str, pipe=None) -> None:
        """Arm (or re-arm, replacing) the timer of ``rule`` for ``ticket``; due in epoch seconds."""
        p = pipe or self.redis.pipeline()
        m = member(rule, ticket)
        p.zadd(PENDING_KEY, {m: due})
        p.hset(GENERATION_KEY, m, generation)
        p.zrem(FIRING_KEY, m)
        if pipe is None:
            p.execute()

    def cancel(self, rule: str, ticket: str, pipe=None) -> None:
        p = pipe or self.redis.pipeline()
        m = member(rule, ticket)
        p.zrem(PENDING_KEY, m)
        p.hdel(GENERATION_KEY, m)
        p.zrem(FIRING_KEY, m)
        if pipe is None:
            p.execute()

    def pending_of(self, timers: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (rule, ticket) timers are armed (pending, firing or parked): one round trip."""
        if not timers:
            return set()
        found = self.redis.hmget(GENERATION_KEY, [member(r, t) for r, t in timers])
        return {timer for timer, gen in zip(timers, found) if gen is not None}

    def generation(self, value: str) -> str | None:
        return text(self.redis.hget(GENERATION_KEY, value))

    def release(self, value: str, generation: str, pipe=None) -> bool | None:
        """Forget a timer that has fired, unless it was re-armed meanwhile (on ``pipe``: its result says)."""
        done = run_script(self._release, KEYS, [value, generation], pipe)
        return None if pipe is not None else bool(done)

    def rearm(self, value: str, generation: str, due: float, new_generation: str, pipe=None,
              firing: bool = False) -> bool | None:
        """Arm a fired timer's next firing, unless it was cancelled or re-armed meanwhile (on ``pipe``: its
        result says). ``firing``: it stays marked firing until ``due``."""
        done = run_script(self._rearm, KEYS, [value, generation, due, new_generation, int(firing), self._firing_ttl],
                          pipe)
        return None if pipe is not None else bool(done)

    def hold(self, value: str, generation: str, until: float, firing: bool = False) -> bool:
        """Make a timer (still this generation) due again only at ``until``: a timer whose job gave up
        (parked), one its own job fires meanwhile (``firing``), or one put back to be claimed again
        (``until`` now)."""
        return self.rearm(value, generation, until, generation, firing=firing)

    def firing(self, values: list[str], now: float) -> set[str]:
        """Which of these timer members are being fired (claimed, their job queued or running): one round trip."""
        if not values:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for value in values:
            pipe.zscore(FIRING_KEY, value)
        return {v for v, until in zip(values, pipe.execute()) if until is not None and until > now}

    def park(self, value: str, generation: str, until: float) -> bool:
        """Keep a timer whose job gave up, due again only at ``until`` (unless retried before)."""
        return self.hold(value, generation, until)

    def generations(self, values: list[str]) -> list[str | None]:
        """The generation of each timer member (None: not armed): one round trip."""
        return [text(g) for g in self.redis.hmget(GENERATION_KEY, values)] if values else []

    def get(self, rule: str, ticket: str) -> PendingTimer | None:
        m = member(rule, ticket)
        pipe = self.redis.pipeline()
        pipe.zscore(PENDING_KEY, m)
        pipe.hget(GENERATION_KEY, m)
        due, gen = pipe.execute()
        return PendingTimer(rule, ticket, due, text(gen)) if due is not None and gen else None

    def pending(self, limit: int = 100, offset: int = 0) -> list[PendingTimer]:
        """The next timers to fire, soonest first, from ``offset``: one ZRANGE and one HMGET."""
        rows = self.redis.zrange(PENDING_KEY, offset, offset + limit - 1, withscores=True)
        gens = self.redis.hmget(GENERATION_KEY, [m for m, _ in rows]) if rows else []
        return [PendingTimer(*split_member(text(m)), due, text(g)) for (m, due), g in zip(rows, gens) if g]

    def count(self) -> int:
        return self.redis.zcard(PENDING_KEY)

    def claim(self, now: float, limit: int = defaults.TIMER_BATCH) -> list[tuple[str, str, float]]:
        """Take the timers due at ``now``: [(member, generation, when it was due)]; each is due
        again after the lease."""
        flat = self._claim(keys=KEYS, args=[now, now + self.lease, limit, self._firing_ttl])
        return [(text(flat[i]), text(flat[i + 1]), float(flat[i + 2])) for i in range(0, len(flat), 3)]

    def pump(self, queue: Queue, now: float, limit: int = defaults.TIMER_BATCH,
             timeout: float = defaults.JOB_TIMEOUT_SECONDS, job_size: int = defaults.TIMER_JOB_SIZE,
             waiting: int = defaults.TIMER_JOBS_WAITING) -> int:
        """Claim timers due at ``now`` and queue jobs firing them, ``job_size`` to a job, at the front of the
        queue; return how many were claimed.

        No more are claimed while ``waiting`` firing jobs wait at the head of the queue: a burst is claimed
        as the workers get through it, so a claimed timer's lease does not run out while it is queued.
        A timer leaves the pending set only when its firing is done with, so a crash anywhere between
        here and there makes it due again when its lease ends.
        """
        room = waiting - sum(1 for j in queue.get_job_ids(0, waiting) if j.startswith(TIMER_BATCH_PREFIX))
        claimed = self.claim(now, min(limit, room * job_size)) if room > 0 else []
        # Each job goes to the front: the last queued is taken first, so the soonest due are queued last.
        for start in reversed(range(0, len(claimed), job_size)):
            enqueue_timers(queue, claimed[start:start + job_size], timeout)
        return len(claimed)


class TimerPump(threading.Thread):
    """Background thread of a worker process: moves due timers onto the queue."""

    def __init__(self, store: TimerStore, queue: Queue, poll: float = defaults.TIMER_POLL_SECONDS,
                 timeout: float = defaults.JOB_TIMEOUT_SECONDS, job_size: int = defaults.TIMER_JOB_SIZE):
        super().__init__(name="relance-timer-pump", daemon=True)
        self.store, self.queue, self.poll, self.timeout, self.job_size = store, queue, poll, timeout, job_size
        self.stopping = threading.Event()

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                moved = self.store.pump(self.queue, time.time(), timeout=self.timeout, job_size=self.job_size)
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
