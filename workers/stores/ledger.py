"""The effects ledger: each effect (an email, a JIRA action) is done once.

An effect has a stable id derived from what caused it (a delivery or a timer
firing) and its place in the rule. Before acting, the intent is written (with
anything computed for it, such as the target priority, so a retry does the
same thing); just before the remote call, an attempt is counted; after it, the
outcome. A retried job skips finished effects, and an effect with an attempt
but no outcome is checked against JIRA before it is tried again.

While one execution performs an effect it holds the effect's claim, so two
executions of the same job (a worker presumed dead that was only slow) never
perform it side by side.
"""

from __future__ import annotations

import json
import time
import uuid
import zlib

from redis import Redis

from .. import defaults
from .connection import RELEASE_IF_OWNER, run_script, text

FINISHED = ("done", "skipped", "failed")


class EffectLedger:
    """Effects in ``relance:effect:<id>`` hashes, each expiring ``ttl`` seconds after its last write."""

    def __init__(self, redis: Redis, ttl: int = defaults.RETENTION_SECONDS,
                 claim_seconds: float = defaults.JOB_TIMEOUT_SECONDS + defaults.HEARTBEAT_GRACE_SECONDS):
        self.redis = redis
        self.ttl = int(ttl)
        self.claim_ms = int(claim_seconds * 1000)
        self._release_claim = redis.register_script(RELEASE_IF_OWNER)
        self._held: dict[str, dict] = {}     # effects claimed by this process (claim_all): as read, then begun

    @staticmethod
    def key(effect_id: str) -> str:
        return f"relance:effect:{effect_id}"

    def get(self, effect_id: str) -> dict:
        return self._entry(self.redis.hgetall(self.key(effect_id)))

    @staticmethod
    def _entry(fields: dict) -> dict:
        raw = {text(k): text(v) for k, v in fields.items()}
        if "intent" in raw:
            raw["intent"] = json.loads(raw["intent"])
        return raw

    def begin(self, effect_id: str, intent: dict, defer: bool = False) -> dict:
        """Record the intent unless one exists; return the intent that stands.

        For an effect claimed with ``claim_all`` the intent that stands is known from its read; with
        ``defer`` (no remote call follows: a dry run), the intent is written with the outcome, by ``finish``.
        """
        held = self._held.get(effect_id)
        if held is not None and "intent" in held:
            return held["intent"]
        if held is not None and defer:
            held.update(intent=intent, begun_at=f"{time.time():.3f}")
            return intent
        key = self.key(effect_id)
        pipe = self.redis.pipeline()
        pipe.hsetnx(key, "intent", json.dumps(intent, default=str))
        pipe.hsetnx(key, "state", "started")
        pipe.hsetnx(key, "started_at", f"{time.time():.3f}")
        pipe.expire(key, self.ttl)
        pipe.hget(key, "intent")
        *_, stored = pipe.execute()
        if held is not None:
            held["intent"] = json.loads(stored)
        return json.loads(stored)

    def attempt(self, effect_id: str) -> int:
        """Count one more attempt of the remote call; return how many were made before this one."""
        pipe = self.redis.pipeline()
        pipe.hincrby(self.key(effect_id), "attempts", 1)
        pipe.expire(self.key(effect_id), self.ttl)
        return pipe.execute()[0] - 1

    def finish(self, effect_id: str, state: str, detail: str = "", pipe=None) -> None:
        assert state in FINISHED
        p = pipe or self.redis.pipeline()
        held = self._held.pop(effect_id, None)
        if held is not None and "begun_at" in held:     # a deferred begin
            p.hsetnx(self.key(effect_id), "intent", json.dumps(held["intent"], default=str))
            p.hsetnx(self.key(effect_id), "started_at", held["begun_at"])
        p.hset(self.key(effect_id), mapping={"state": state, "detail": detail, "finished_at": f"{time.time():.3f}"})
        p.expire(self.key(effect_id), self.ttl)
        if pipe is None:
            p.execute()

    def keep_sent(self, effect_id: str, message: dict) -> None:
        """Keep an email as it was sent (subject, recipients, text and HTML), zlib-compressed:
        inlined HTML compresses about tenfold. Expires with the ledger."""
        raw = zlib.compress(json.dumps(message, ensure_ascii=False).encode(), 6)
        self.redis.set(self.key(effect_id) + ":sent", raw, ex=self.ttl)

    def sent(self, effect_id: str) -> dict | None:
        """The email an effect sent, as ``keep_sent`` kept it, or None."""
        raw = self.redis.get(self.key(effect_id) + ":sent")
        return json.loads(zlib.decompress(raw)) if raw else None

    def reopen(self, effect_id: str) -> None:
        """Forget an effect's outcome (and intent), so that it is performed again."""
        self.redis.delete(self.key(effect_id))

    def claim(self, effect_id: str, seconds: float | None = None) -> str | None:
        """Take the effect's claim for ``seconds`` (default: a job's whole time); a token to release
        it, or None if another execution holds it."""
        token = uuid.uuid4().hex
        px = int(seconds * 1000) if seconds is not None else self.claim_ms
        if self.redis.set(self.key(effect_id) + ":claim", token, nx=True, px=max(1, px)):
            return token
        return None

    def claim_all(self, effect_ids: list[str], seconds: float | None = None) -> list[tuple[str | None, dict]]:
        """``claim`` and ``get`` each effect, all in one round trip: [(the claim's token or None, the effect as
        it stands)]. Each entry is read after its claim is taken, so while the claim is held it cannot change:
        ``begin`` answers from it, and may defer its write to ``finish``."""
        px = max(1, int(seconds * 1000) if seconds is not None else self.claim_ms)
        tokens = [uuid.uuid4().hex for _ in effect_ids]
        pipe = self.redis.pipeline(transaction=False)
        for effect_id, token in zip(effect_ids, tokens):
            pipe.set(self.key(effect_id) + ":claim", token, nx=True, px=px)
            pipe.hgetall(self.key(effect_id))
        found = pipe.execute() if effect_ids else []
        out = []
        for i, (effect_id, token) in enumerate(zip(effect_ids, tokens)):
            entry = self._entry(found[2 * i + 1])
            if found[2 * i]:
                self._held[effect_id] = dict(entry)
            out.append((token if found[2 * i] else None, entry))
        return out

    def release(self, effect_id: str, token: str, pipe=None) -> None:
        """Give the effect's claim back (a deferred begin not yet finished is dropped: nothing was done)."""
        self._held.pop(effect_id, None)
        run_script(self._release_claim, [self.key(effect_id) + ":claim"], [token], pipe)
