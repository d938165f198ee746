"""A budget of calls to one remote (JIRA, SendGrid), shared by every thread of every worker through Redis.

Two keys per remote: ``relance:remote:<name>:paused`` (until when every worker waits: the
remote answered 429 with Retry-After, or a rate-limit reset) and ``...:next`` (the next free
slot when calls are paced at a configured rate, a GCRA schedule). Checking both and taking
a slot is one Lua call before each remote call; Redis's clock is everyone's clock.
"""

from __future__ import annotations

import logging
import time

from redis import Redis

from .. import defaults
from ..exceptions import TransientError

log = logging.getLogger("relance.budget")

# KEYS: paused, next. ARGV: ms between calls (0: unpaced), the longest wait to book (ms).
# Returns {booked, ms to wait}: booked 0 means paused (or no slot soon enough): wait, then ask again.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if paused > now then return {0, paused - now} end
local interval = tonumber(ARGV[1])
if interval <= 0 then return {1, 0} end
local slot = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
if slot - now > tonumber(ARGV[2]) then return {0, slot - now} end
redis.call('SET', KEYS[2], slot + interval, 'PX', math.ceil(slot - now + interval) + 1000)
return {1, slot - now}
"""

# KEYS: paused. ARGV: ms to pause. Extends the pause, never shortens it; returns the ms it lasts from now.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wanted = now + tonumber(ARGV[1])
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
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


def _sleep(seconds: float) -> None:
    """Sleep in short steps, so a job's timeout (an exception raised in its thread) lands on time."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.25))


class RemoteBudget:
    """Calls to the remote ``name``: at most ``rate`` a second across all workers (0: unpaced), and none
    while the remote asked every caller to wait.

    ``before_call`` waits for the pause and the call's slot; if that would take more than ``max_wait``
    seconds it raises TransientError (the job is retried later) without taking a slot. ``pause``
    records the wait a 429 asked for; every thread of every worker honours it from its next call.
    """

    def __init__(self, redis: Redis, name: str, rate: float = 0.0,
                 max_wait: float = defaults.INLINE_RETRY_AFTER_SECONDS):
        self.redis, self.name = redis, name
        self.rate, self.max_wait = rate, max_wait
        self.keys = [f"relance:remote:{name}:paused", f"relance:remote:{name}:next"]
        self._take = redis.register_script(_TAKE)
        self._pause = redis.register_script(_PAUSE)

    def before_call(self) -> float:
        """Wait until this call may go; the seconds waited."""
        interval_ms = 1000 / self.rate if self.rate > 0 else 0
        started = time.monotonic()
        slept_for_slot = False
        while True:
            waited = time.monotonic() - started
            # After waiting for a booked slot, only check that no pause began meanwhile (interval 0).
            booked, wait_ms = self._take(self.keys, [0 if slept_for_slot else interval_ms,
                                                     max(0.0, self.max_wait - waited) * 1000])
            wait = int(wait_ms) / 1000
            if booked and (slept_for_slot or wait == 0):
                return waited
            if waited + wait > self.max_wait:
                raise TransientError(f"{self.name}: no call possible for {wait:.1f}s (paused after a 429, or over "
                                     f"the rate budget)", retry_after=wait)
            _sleep(wait)
            slept_for_slot = bool(booked)

    def pause(self, seconds: float) -> None:
        """Every worker waits ``seconds`` before its next call to the remote (as a 429 asked)."""
        lasts = int(self._pause(self.keys[:1], [max(0, int(seconds * 1000))])) / 1000
        log.warning("%s asked to wait: every worker pauses its calls to it for %.1fs", self.name, lasts)
