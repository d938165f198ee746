"""The effects ledger: each effect (an email, a JIRA action) is done once.

An effect has a stable id derived from what caused it (a delivery or a timer
firing) and its place in the rule. Before acting, the intent is written (with
anything computed for it, such as the target priority, so a retry does the
same thing); after acting, the outcome. A retried job skips finished effects.
"""

from __future__ import annotations

import json
import time

from redis import Redis

from . import defaults
from .connection import text

FINISHED = ("done", "skipped", "failed")


class EffectLedger:
    def __init__(self, redis: Redis, ttl: int = defaults.RETENTION_SECONDS):
        self.redis = redis
        self.ttl = ttl

    @staticmethod
    def key(effect_id: str) -> str:
        return f"relance:effect:{effect_id}"

    def get(self, effect_id: str) -> dict:
        raw = {text(k): text(v) for k, v in self.redis.hgetall(self.key(effect_id)).items()}
        if "intent" in raw:
            raw["intent"] = json.loads(raw["intent"])
        return raw

    def begin(self, effect_id: str, intent: dict) -> dict:
        """Record the intent unless one exists; return the intent that stands."""
        key = self.key(effect_id)
        pipe = self.redis.pipeline()
        pipe.hsetnx(key, "intent", json.dumps(intent, default=str))
        pipe.hsetnx(key, "state", "started")
        pipe.hsetnx(key, "started_at", f"{time.time():.3f}")
        pipe.expire(key, self.ttl)
        pipe.hget(key, "intent")
        *_, stored = pipe.execute()
        return json.loads(stored)

    def finish(self, effect_id: str, state: str, detail: str = "") -> None:
        assert state in FINISHED
        self.redis.hset(self.key(effect_id), mapping={"state": state, "detail": detail,
                                                      "finished_at": f"{time.time():.3f}"})
