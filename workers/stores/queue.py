"""The RQ queue and how jobs are put on it: JSON serializer, retries, stable job ids.

Every job carries the failure callback that keeps the work of a job that gives
up (workers/failures.py), and RQ keeps a failed job as long as relance keeps
its record.
"""

from __future__ import annotations

import uuid

from redis import Redis
from rq import Callback, Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.serializers import JSONSerializer

from .. import defaults
from ..failures import DELIVERY_FUNC


def make_queue(redis: Redis, name: str = defaults.QUEUE_NAME) -> Queue:
    return Queue(name, connection=redis, serializer=JSONSerializer)


def _retry(at_front: bool = False) -> Retry:
    return Retry(max=defaults.JOB_RETRIES, interval=defaults.JOB_RETRY_INTERVALS_SECONDS, enqueue_at_front=at_front)


def job_options(timeout: float, failure_ttl: int = defaults.RETENTION_SECONDS, retry: Retry | None = None) -> dict:
    """RQ's options of every relance job (``Queue.enqueue_call``/``create_job`` keywords): the retry
    schedule (default: JOB_RETRIES at JOB_RETRY_INTERVALS_SECONDS), the failure callback, the TTLs."""
    retry = retry or _retry()
    return {"retry": retry, "meta": {"retries": retry.max}, "timeout": int(timeout),
            "result_ttl": defaults.RESULT_TTL_SECONDS, "failure_ttl": int(failure_ttl),
            "on_failure": Callback("workers.failures.on_job_failure")}


def enqueue_call(queue: Queue, func: str, job_id: str, args: tuple, timeout: float,
                 failure_ttl: int = defaults.RETENTION_SECONDS, retry: Retry | None = None,
                 at_front: bool = False) -> bool:
    """Queue ``func(*args)`` once under ``job_id``; False if that job already exists.

    ``retry``: RQ's retry schedule (default: JOB_RETRIES at JOB_RETRY_INTERVALS_SECONDS).
    ``at_front``: ahead of the jobs waiting (and so are its retries).
    """
    try:
        queue.enqueue_call(func, args=args, job_id=job_id, unique=True, at_front=at_front,
                           **job_options(timeout, failure_ttl, retry or _retry(at_front)))
    except DuplicateJobError:
        return False
    return True


def delivery_job_id(delivery_id: str) -> str:
    return f"delivery-{delivery_id}"


def enqueue_delivery(queue: Queue, delivery_id: str, timeout: float = defaults.JOB_TIMEOUT_SECONDS,
                     retry: Retry | None = None) -> bool:
    return enqueue_call(queue, DELIVERY_FUNC, delivery_job_id(delivery_id), (delivery_id,), timeout, retry=retry)


def enqueue_timer(queue: Queue, job_id: str, member: str, generation: str, due: float | None = None,
                  timeout: float = defaults.JOB_TIMEOUT_SECONDS, at_front: bool = False) -> bool:
    """Queue one timer's own job (retried; parked when it gives up)."""
    return enqueue_call(queue, "workers.jobs.fire_timer", job_id, (member, generation, due), timeout,
                        at_front=at_front)


TIMER_BATCH_PREFIX = "timers-"


def enqueue_timers(queue: Queue, timers: list[tuple[str, str, float]], timeout: float = defaults.JOB_TIMEOUT_SECONDS
                   ) -> str:
    """Queue one job firing ``timers`` [(member, generation, due)] at the front of the queue, so that due
    timers never wait behind queued deliveries; return its id.

    The job is not retried as a whole: each of its timers stays claimed in the timer index until it is
    done with, so the timers of a job lost with its worker come due again when their lease ends, and a
    timer whose firing fails goes on in a job of its own (see workers/timer_jobs.py).
    """
    job_id = f"{TIMER_BATCH_PREFIX}{uuid.uuid4().hex[:20]}"
    queue.enqueue_call("workers.timer_jobs.fire_timers", args=([list(t) for t in timers],), job_id=job_id,
                       timeout=int(timeout), result_ttl=defaults.RESULT_TTL_SECONDS, at_front=True,
                       failure_ttl=defaults.RETENTION_SECONDS, meta={"timers": len(timers)},
                       on_failure=Callback("workers.failures.on_job_failure"))
    return job_id
