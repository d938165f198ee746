"""Jobs that gave up: kept, visible and retryable, never only in RQ's failed registry.

A delivery or a timer whose job exhausts its retries (a JIRA outage longer than
the retry schedule, say) is recorded here with its reason, its ticket and what
is needed to run it again; the delivery's body and decision are kept for the
whole retention, and the timer stays in the timer index, parked. ``retry``
queues the same work again; the effects ledger skips what was already done.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from redis import Redis
from rq import Queue

from . import defaults
from .stores.connection import text

log = logging.getLogger("relance.failures")

INDEX_KEY = "relance:failures"          # zset: job id -> when it gave up, epoch seconds

DELIVERY_FUNC = "workers.jobs.process_delivery"
TIMER_FUNC = "workers.jobs.fire_timer"
TIMERS_FUNC = "workers.timer_jobs.fire_timers"   # a pump's firing job: its timers come due again on their own
RULE_FUNC = "workers.jobs.retry_rule"         # a rule one of whose effects JIRA or the mail provider refused
MAIL_EVENTS_FUNC = "workers.mail_events.process_mail_events"   # a batch of SendGrid's Event Webhook
REPLY_FUNC = "workers.replies.process_reply"   # a customer's reply by email (Inbound Parse)


@dataclass(frozen=True)
class Failure:
    job_id: str
    func: str
    args: tuple
    ticket: str | None
    reason: str
    attempts: int
    failed_at: float

    @property
    def kind(self) -> str:
        return {DELIVERY_FUNC: "delivery", TIMER_FUNC: "timer", RULE_FUNC: "effect",
                MAIL_EVENTS_FUNC: "events", REPLY_FUNC: "reply"}.get(self.func, self.func)


class FailureStore:
    """``relance:failure:<job id>`` hashes and their index, each expiring ``ttl`` after the last failure."""

    def __init__(self, redis: Redis, ttl: int = defaults.RETENTION_SECONDS):
        self.redis = redis
        self.ttl = int(ttl)

    @staticmethod
    def key(job_id: str) -> str:
        return f"relance:failure:{job_id}"

    def record(self, job_id: str, func: str, args, ticket: str | None, reason: str, attempts: int) -> None:
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.hset(self.key(job_id), mapping={"func": func, "args": json.dumps(list(args)), "ticket": ticket or "",
                                             "reason": reason, "attempts": attempts, "failed_at": f"{now:.3f}"})
        pipe.expire(self.key(job_id), self.ttl)
        pipe.zadd(INDEX_KEY, {job_id: now})
        pipe.zremrangebyscore(INDEX_KEY, "-inf", now - self.ttl)
        pipe.expire(INDEX_KEY, self.ttl)
        pipe.execute()

    def get(self, job_id: str) -> Failure | None:
        raw = {text(k): text(v) for k, v in self.redis.hgetall(self.key(job_id)).items()}
        if not raw:
            return None
        return Failure(job_id, raw["func"], tuple(json.loads(raw["args"])), raw.get("ticket") or None,
                       raw.get("reason", ""), int(raw.get("attempts") or 0), float(raw.get("failed_at") or 0))

    def list(self, limit: int = 100, offset: int = 0) -> list[Failure]:
        """Failures, newest first."""
        ids = [text(i) for i in self.redis.zrevrange(INDEX_KEY, offset, offset + limit - 1)]
        found = [self.get(i) for i in ids]
        return [f for f in found if f is not None]

    def count(self) -> int:
        return self.redis.zcard(INDEX_KEY)

    def forget(self, job_id: str) -> None:
        pipe = self.redis.pipeline()
        pipe.delete(self.key(job_id))
        pipe.zrem(INDEX_KEY, job_id)
        pipe.execute()

    def retry(self, job_id: str, queue: Queue, timeout: float = defaults.JOB_TIMEOUT_SECONDS) -> str:
        """Queue the failed work again (a new job with a fresh retry schedule); return the new job id."""
        from .stores.queue import enqueue_call
        failure = self.get(job_id)
        if failure is None:
            raise KeyError(job_id)
        new_id = f"{job_id.split('_retry')[0]}_retry{int(time.time() * 1000)}"
        enqueue_call(queue, failure.func, new_id, failure.args, timeout)
        self.forget(job_id)
        return new_id


def on_job_failure(job, connection, exc_type, exc_value, traceback) -> None:
    """RQ failure callback of every relance job: note the attempt; on the last one, keep the work.

    Called by RQ for a job that raised and for an abandoned one (its worker died),
    before RQ decides on a retry: ``job.retries_left`` still counts this attempt.
    """
    from .context import current
    from .core.events import parse_event
    from .stores.timers import split_member

    reason = f"{exc_type.__name__ if exc_type else 'failed'}: {exc_value}"[:500]
    if job.func_name == TIMERS_FUNC:
        # Nothing to keep: each of its timers stays claimed in the timer index until done with, and
        # comes due again when its lease ends.
        log.error("timer firing job %s failed (%s); its %s timers come due again when their lease ends",
                  job.id, reason, len(job.args[0]) if job.args else "")
        return
    ctx = current()
    final = not (job.retries_left is not None and job.retries_left > 0)
    args = tuple(job.args or ())
    ticket = None
    if job.func_name == TIMER_FUNC and args:
        ticket = split_member(args[0])[1]
    elif job.func_name == RULE_FUNC and len(args) >= 3:
        ticket = args[2]
    elif job.func_name == DELIVERY_FUNC and args:
        try:
            body = ctx.deliveries.body(args[0])
            event = parse_event(json.loads(body)) if body else None
            ticket = event.issue_key if event else None
        except Exception:       # an unreadable body has no ticket to name; the failure is still kept
            ticket = None
    elif job.func_name == REPLY_FUNC and args:
        from .replies import ticket_of_post
        try:
            ticket = ticket_of_post(ctx, args[0])
        except Exception:       # a post that cannot be read names no ticket; the failure is still kept
            ticket = None
    attempts = int((job.meta or {}).get("retries", defaults.JOB_RETRIES)) + 1 - (job.retries_left or 0)
    if not final:
        ctx.audit.record(ticket, "attempt failed", job=job.id, reason=reason, retries_left=job.retries_left)
        return
    ctx.failures.record(job.id, job.func_name, args, ticket, reason, attempts)
    if job.func_name in (DELIVERY_FUNC, MAIL_EVENTS_FUNC, REPLY_FUNC) and args:
        ctx.deliveries.keep_for_retry(args[0])
    elif job.func_name == TIMER_FUNC and len(args) >= 2:
        ctx.timers.park(args[0], args[1], time.time() + ctx.failures.ttl)
    ctx.audit.record(ticket, "gave up", job=job.id, reason=reason,
                     note="kept for retry (relance failures / the operator pages)")
    log.error("job %s gave up (%s); kept for retry", job.id, reason)
