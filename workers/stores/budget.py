"""A budget of calls to one remote (JIRA, SendGrid), shared by every thread of every worker through Redis.

Keys per remote: ``relance:remote:<name>:paused`` (until when every worker waits: the remote
answered 429 with Retry-After, or a rate-limit reset), ``...:next`` (the next free slot when
calls are paced, a GCRA schedule), ``...:calls`` (calls booked in each of the last seconds) and
``...:learned`` (the pace a 429 taught). Checking the pause and booking a slot is one Lua call
before each remote call; Redis's clock is everyone's clock.

Pacing is the configured rate (RELANCE_JIRA_RATE, RELANCE_SENDGRID_RATE) or, after a 429 that
began a pause, 80% of the calls made in the second before it (if at least 5), whichever is
slower; the learned pace lasts LEARNED_PACE_SECONDS after the last 429 that taught it (another
429 meanwhile slows it by 20% more). So the workers do not all call at once when a pause ends,
only to be refused again.
"""

from __future__ import annotations

import logging
import time

from redis import Redis

from .. import defaults
from ..exceptions import TransientError

log = logging.getLogger("relance.budget")

LEARNED_PACE_SECONDS = 60
SLOWER_AFTER_A_429 = 0.8
CALLS_TO_LEARN_FROM = 5        # a 429 after fewer calls a second is about something else (one issue's writes)

# KEYS: paused, next, learned, calls. ARGV: configured ms between calls (0: unpaced), the longest wait to
# book (ms), with ARGV[3] = 1 only checking the pause (after waiting for a booked slot).
# Returns {booked, ms to wait}: booked 0 means paused (or no slot soon enough): wait, then ask again.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if paused > now then return {0, paused - now} end
if ARGV[3] == '1' then return {1, 0} end
local second = math.floor(now / 1000)
redis.call('HINCRBY', KEYS[4], second, 1)
redis.call('HDEL', KEYS[4], second - 2)
redis.call('PEXPIRE', KEYS[4], 3000)
local interval = math.max(tonumber(ARGV[1]), tonumber(redis.call('GET', KEYS[3]) or '0'))
if interval <= 0 then return {1, 0} end
local slot = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
if slot - now > tonumber(ARGV[2]) then
  redis.call('HINCRBY', KEYS[4], second, -1)
  return {0, slot - now}
end
redis.call('SET', KEYS[2], slot + interval, 'PX', math.ceil(slot - now + interval) + 1000)
return {1, slot - now}
"""

# KEYS: paused, learned, calls. ARGV: ms to pause, how long a learned pace lasts (ms), the slow-down, the
# fewest calls in a second to learn from.
# Extends the pause, never shortens it. A 429 that begins a pause also teaches a pace: the slow-down
# times the calls booked in the second before (or this one, if more), or times the pace learned before.
# Returns the ms the pause lasts from now.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wanted = now + tonumber(ARGV[1])
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if paused <= now then
  local second = math.floor(now / 1000)
  local calls = math.max(tonumber(redis.call('HGET', KEYS[3], second - 1) or '0'),
                         tonumber(redis.call('HGET', KEYS[3], second) or '0'))
  local learned = tonumber(redis.call('GET', KEYS[2]) or '0')
  local rate = calls * tonumber(ARGV[3])
  if learned > 0 then rate = math.min(rate, tonumber(ARGV[3]) * 1000 / learned) end
  if calls >= tonumber(ARGV[4]) then
    redis.call('SET', KEYS[2], 1000 / math.max(rate, 1), 'PX', ARGV[2])
  end
end
if wanted > paused then
  redis.call('SET', KEYS[1], wanted, 'PX', math.ceil(tonumber(ARGV[1])) + 1000)
  return tonumber(ARGV[1])
end
return paused - now
"""


def inline_retries(budget: "RemoteBudget | None") -> int:
    """How often a client repeats in place a call answered 429 with a short wait: more often with a shared
    budget, where every worker waits together and the retry costs only the wait the remote asked for."""
    return defaults.INLINE_RETRIES if budget is None else defaults.INLINE_RETRIES_WITH_BUDGET


def attempts(budget: "RemoteBudget | None"):
    """The attempts of one remote call with its inline retries, as (number, last): each is yielded
    once the shared budget lets a call go (the pauses and pace of every worker)."""
    retries = inline_retries(budget)
    for attempt in range(retries + 1):
        if budget is not None:
            budget.before_call()
        yield attempt, attempt == retries


def _sleep(seconds: float) -> None:
    """Sleep in short steps, so a job's timeout (an exception raised in its thread) lands on time."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.25))


class RemoteBudget:
    """Calls to the remote ``name``: at most ``rate`` a second across all workers (0: unpaced; slower for a
    while after a 429), and none while the remote asked every caller to wait.

    ``before_call`` waits for the pause and the call's slot; if that would take more than ``max_wait``
    seconds it raises TransientError (the job is retried later) without taking a slot. ``pause``
    records the wait a 429 asked for; every thread of every worker honours it from its next call.
    """

    def __init__(self, redis: Redis, name: str, rate: float = 0.0,
                 max_wait: float = defaults.INLINE_RETRY_AFTER_SECONDS):
        self.redis, self.name = redis, name
        self.rate, self.max_wait = rate, max_wait
        self.keys = [f"relance:remote:{name}:{key}" for key in ("paused", "next", "learned", "calls")]
        self._take = redis.register_script(_TAKE)
        self._pause = redis.register_script(_PAUSE)

    def before_call(self) -> float:
        """Wait until this call may go; the seconds waited."""
        interval_ms = 1000 / self.rate if self.rate > 0 else 0
        started = time.monotonic()
        slept_for_slot = False
        while True:
            waited = time.monotonic() - started
            # After waiting for a booked slot, only check that no pause began meanwhile.
            booked, wait_ms = self._take(self.keys, [interval_ms, max(0.0, self.max_wait - waited) * 1000,
                                                     int(slept_for_slot)])
            wait = int(wait_ms) / 1000
            if booked and (slept_for_slot or wait == 0):
                return waited
            if waited + wait > self.max_wait:
                raise TransientError(f"{self.name}: no call possible for {wait:.1f}s (paused after a 429, or over "
                                     f"the rate budget)", retry_after=wait)
            _sleep(wait)
            slept_for_slot = bool(booked)

    def pause(self, seconds: float) -> None:
        """Every worker waits ``seconds`` before its next call to the remote (as a 429 asked), then paces
        its calls slower than before the 429 for a while."""
        lasts = int(self._pause([self.keys[0], self.keys[2], self.keys[3]],
                                [max(0, int(seconds * 1000)), LEARNED_PACE_SECONDS * 1000,
                                 SLOWER_AFTER_A_429, CALLS_TO_LEARN_FROM])) / 1000
        log.warning("%s asked to wait: every worker pauses its calls to it for %.1fs", self.name, lasts)
