"""The worker process: an RQ worker on the relance queue that also pumps due timers and reconciles
with JIRA (at start-up, then every RELANCE_RECONCILE_INTERVAL)."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from . import defaults
from .context import Context
from .reconcile import Reconciler
from .stores.timers import TimerPump

log = logging.getLogger("relance.worker")

# What RQ logs at INFO on every maintenance pass, i.e. every RELANCE_MAINTENANCE_INTERVAL seconds.
RQ_MAINTENANCE_MESSAGES = frozenset({
    "Worker %s: cleaning registries for queue: %s",
    "Worker %s: cleaning group registries",
})


class _MaintenanceAtDebug(logging.Filter):
    """Logs RQ's routine maintenance lines at DEBUG; everything else (job outcomes, warnings) passes as is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.msg in RQ_MAINTENANCE_MESSAGES:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_MAINTENANCE_AT_DEBUG = _MaintenanceAtDebug()


class RelanceWorker(SimpleWorker):
    """Runs jobs in-process (no fork per job: jobs are short and I/O-bound).

    A started job's registry entry lives job timeout + HEARTBEAT_GRACE seconds,
    not RQ's job timeout + 60, so the job of a SIGKILLed worker is retried by
    the next maintenance pass of any live worker within seconds of its timeout.
    RQ's every-pass maintenance lines are logged at DEBUG, not INFO.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log.addFilter(_MAINTENANCE_AT_DEBUG)     # RQ's module logger; adding it again is a no-op

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        timeout = job.timeout if job.timeout and job.timeout > 0 else defaults.JOB_TIMEOUT_SECONDS
        return int(timeout) + defaults.HEARTBEAT_GRACE_SECONDS

    @property
    def dequeue_timeout(self) -> int:
        # Wake at least once per maintenance interval, so an idle worker recovers abandoned jobs.
        return max(1, min(self.worker_ttl - 15, int(self.maintenance_interval)))


def check_eviction_policy(redis) -> None:
    """Warn when Redis may evict keys: timers, dedupe marks and queued jobs must never vanish."""
    try:
        policy = redis.config_get("maxmemory-policy").get("maxmemory-policy")
    except RedisError:      # managed Redis often forbids CONFIG
        log.info("could not read Redis's maxmemory-policy; make sure it is noeviction")
        return
    if policy not in (b"noeviction", "noeviction"):
        log.warning("Redis maxmemory-policy is %s: set it to noeviction, or timers and queued "
                    "deliveries may be evicted under memory pressure", policy)


def make_worker(ctx: Context) -> RelanceWorker:
    """The worker of ``ctx``'s queue, configured as the Procfile's worker runs it."""
    return RelanceWorker(
        [ctx.queue], connection=ctx.redis, serializer=JSONSerializer,
        maintenance_interval=int(ctx.settings.maintenance_interval),
        worker_ttl=defaults.WORKER_TTL_SECONDS,
        job_monitoring_interval=5,
    )


def run_worker(ctx: Context, burst: bool = False) -> bool:
    """Work the queue (and run due timers) until stopped; with ``burst``, until the queue is empty."""
    check_eviction_policy(ctx.redis)
    worker = make_worker(ctx)
    pump = TimerPump(ctx.timers, ctx.queue, ctx.settings.timer_poll, ctx.settings.job_timeout,
                     ctx.settings.timer_job_size)
    reconciler = start_reconciler(ctx) if not burst else None
    if not burst:
        pump.start()
    try:
        return worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
    finally:
        pump.stop()
        if reconciler:
            reconciler.stop()


def start_reconciler(ctx: Context) -> Reconciler | None:
    """Reconcile now and every RELANCE_RECONCILE_INTERVAL in a background thread (JIRA configured only)."""
    if not ctx.settings.jira_configured:
        log.info("reconcile: nothing to reconcile: JIRA is not configured (dry run)")
        return None
    reconciler = Reconciler(ctx, ctx.settings.reconcile_interval)
    reconciler.start()
    return reconciler
