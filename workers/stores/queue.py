"""The RQ queue and how jobs are put on it: JSON serializer, retries, stable job ids.

Every job carries the failure callback that keeps the work of a job that gives
up (workers/failures.py), and RQ keeps a failed job as long as relance keeps
its record.
"""

from __future__ import annotations

from redis import Redis
from rq import Callback, Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.serializers import JSONSerializer

from .. import defaults
from ..failures import DELIVERY_FUNC


def make_queue(redis: Redis, name: str = defaults.QUEUE_NAME) -> Queue:
    return Queue(name, connection=redis, serializer=JSONSerializer)


def _retry() -> Retry:
    return Retry(max=defaults.JOB_RETRIES, interval=defaults.JOB_RETRY_INTERVALS_SECONDS)


def job_options(timeout: float, failure_ttl: int = defaults.RETENTION_SECONDS, retry: Retry | None = None) -> dict:
    """RQ's options of every relance job (``Queue.enqueue_call``/``create_job`` keywords): the retry
    schedule (default: JOB_RETRIES at JOB_RETRY_INTERVALS_SECONDS), the failure callback, the TTLs."""
    retry = retry or _retry()
    return {"retry": retry, "meta": {"retries": retry.max}, "timeout": int(timeout),
            "result_ttl": defaults.RESULT_TTL_SECONDS, "failure_ttl": int(failure_ttl),
            "on_failure": Callback("workers.failures.on_job_failure")}


def enqueue_call(queue: Queue, func: str, job_id: str, args: tuple, timeout: float,
                 failure_ttl: int = defaults.RETENTION_SECONDS, retry: Retry | None = None) -> bool:
    """Queue ``func(*args)`` once under ``job_id``; False if that job already exists.

    ``retry``: RQ's retry schedule (default: JOB_RETRIES at JOB_RETRY_INTERVALS_SECONDS).
    """
    try:
        queue.enqueue_call(func, args=args, job_id=job_id, unique=True, **job_options(timeout, failure_ttl, retry))
    except DuplicateJobError:
        return False
    return True


def delivery_job_id(delivery_id: str) -> str:
    return f"delivery-{delivery_id}"


def enqueue_delivery(queue: Queue, delivery_id: str, timeout: float = defaults.JOB_TIMEOUT_SECONDS,
                     retry: Retry | None = None) -> bool:
    return enqueue_call(queue, DELIVERY_FUNC, delivery_job_id(delivery_id), (delivery_id,), timeout, retry=retry)


def enqueue_timer(queue: Queue, job_id: str, member: str, generation: str, due: float | None = None,
                  timeout: float = defaults.JOB_TIMEOUT_SECONDS) -> bool:
    return enqueue_call(queue, "workers.jobs.fire_timer", job_id, (member, generation, due), timeout)
