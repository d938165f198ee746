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


def make_queue(redis: Redis, name: str = defaults.QUEUE_NAME) -> Queue:
    return Queue(name, connection=redis, serializer=JSONSerializer)


def _retry() -> Retry:
    return Retry(max=defaults.JOB_RETRIES, interval=defaults.JOB_RETRY_INTERVALS_SECONDS)


def enqueue_call(queue: Queue, func: str, job_id: str, args: tuple, timeout: float,
                 failure_ttl: int = defaults.RETENTION_SECONDS, retry: Retry | None = None) -> bool:
    """Queue ``func(*args)`` once under ``job_id``; False if that job already exists.

    ``retry``: RQ's retry schedule (default: JOB_RETRIES at JOB_RETRY_INTERVALS_SECONDS).
    """
    retry = retry or _retry()
    try:
        queue.enqueue_call(func, args=args, job_id=job_id, unique=True, retry=retry, meta={"retries": retry.max},
                           timeout=int(timeout), result_ttl=defaults.RESULT_TTL_SECONDS,
                           failure_ttl=int(failure_ttl), on_failure=Callback("workers.failures.on_job_failure"))
    except DuplicateJobError:
        return False
    return True


def enqueue_delivery(queue: Queue, delivery_id: str, timeout: float = defaults.JOB_TIMEOUT_SECONDS,
                     retry: Retry | None = None) -> bool:
    return enqueue_call(queue, "workers.jobs.process_delivery", f"delivery-{delivery_id}", (delivery_id,), timeout,
                        retry=retry)


def enqueue_timer(queue: Queue, job_id: str, member: str, generation: str, due: float | None = None,
                  timeout: float = defaults.JOB_TIMEOUT_SECONDS) -> bool:
    return enqueue_call(queue, "workers.jobs.fire_timer", job_id, (member, generation, due), timeout)
