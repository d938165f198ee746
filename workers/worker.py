"""The worker process: an RQ worker on the relance queue that runs several jobs at once in threads,
and also pumps due timers and reconciles with JIRA (at start-up, then every RELANCE_RECONCILE_INTERVAL)."""

from __future__ import annotations

import logging
import queue as threads_queue
import threading

from redis.exceptions import RedisError
from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.serializers import JSONSerializer
from rq.timeouts import BaseTimeoutException, TimerDeathPenalty
from rq.worker import WorkerStatus

from . import defaults
from .context import Context
from .failures import DELIVERY_FUNC, RULE_FUNC, TIMER_FUNC
from .reconcile import Reconciler
from .sequencing import NO_TICKET, UNKNOWN, TicketSequencer, running
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


TICKET_JOBS = frozenset({DELIVERY_FUNC, TIMER_FUNC, RULE_FUNC})    # jobs that declare their ticket


class RelanceWorker(SimpleWorker):
    """Runs up to ``threads`` jobs at once in-process, one thread each (no fork per job: jobs are short
    and spend their time waiting for JIRA and SendGrid).

    RQ's own loop dequeues, in queue order, only when a thread is free; each job is
    registered as started, retried and reported by RQ as with its SimpleWorker. Jobs of
    one ticket run one after the other in queue order (workers/sequencing.py). A job's
    timeout is a timer that raises in its thread (RQ's TimerDeathPenalty: SIGALRM
    reaches only the main thread). A started job's registry entry lives job timeout +
    HEARTBEAT_GRACE seconds, not RQ's job timeout + 60, so the jobs of a SIGKILLed
    worker are retried by the next maintenance pass of any live worker within seconds
    of their timeout. A warm shutdown (SIGTERM) finishes the jobs in flight. RQ's
    every-pass maintenance lines are logged at DEBUG, not INFO.
    """

    death_penalty_class = TimerDeathPenalty

    def __init__(self, *args, threads: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.log.addFilter(_MAINTENANCE_AT_DEBUG)     # RQ's module logger; adding it again is a no-op
        if threads < 1:
            raise ValueError(f"a worker needs at least one thread, got {threads}")
        self.threads = threads
        self.sequencer = TicketSequencer()
        self._jobs: threads_queue.SimpleQueue = threads_queue.SimpleQueue()
        self._pool: list[threading.Thread] = []
        self._in_flight = 0
        self._finished = threading.Condition()
        self._waiting_for_work = False

    # -- running jobs in threads ---------------------------------------------------------------

    def execute_job(self, job, queue):
        """Hand the job just dequeued to a free thread (RQ's loop dequeues only when one is free)."""
        turn = self.sequencer.admit(UNKNOWN if job.func_name in TICKET_JOBS else NO_TICKET)
        try:
            execution = self.prepare_execution(job)
        except BaseException:
            self.sequencer.done(turn)
            raise
        with self._finished:
            self._in_flight += 1
        if len(self._pool) < self.threads:
            thread = threading.Thread(target=self._run_jobs, name=f"relance-job-{len(self._pool) + 1}", daemon=True)
            self._pool.append(thread)
            thread.start()
        self._jobs.put((job, queue, execution, turn))

    def _run_jobs(self) -> None:
        while True:
            job, queue, execution, turn = self._jobs.get()
            try:
                running(self.sequencer, turn)
                self.perform_job(job, queue, execution)     # RQ records the job's own failures
            except BaseTimeoutException:      # a job timeout that fired as the job ended: RQ has seen the end
                self.log.warning("Worker %s: job %s timed out as it finished", self.name, job.id)
            except Exception:                 # RQ could not record the outcome (Redis gone?): the thread lives on
                self.log.exception("Worker %s: job %s: its outcome could not be recorded", self.name, job.id)
            finally:
                running(None, None)
                self.sequencer.done(turn)
                with self._finished:
                    self._in_flight -= 1
                    self._finished.notify_all()

    def busy(self) -> int:
        """Jobs running now in this worker."""
        with self._finished:
            return self._in_flight

    def _wait_for_jobs(self, below: int, timeout: float | None) -> bool:
        """Wait until fewer than ``below`` jobs run, at most ``timeout`` seconds; True if so."""
        with self._finished:
            return self._finished.wait_for(lambda: self._in_flight < below, timeout)

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """RQ's dequeue, once a thread is free. In burst mode (``timeout`` None) an empty queue ends the
        run only when no job was in flight as it was found empty: a failing one may queue its retry."""
        while True:
            self._waiting_for_work = True
            try:
                while not self._wait_for_jobs(self.threads, self.dequeue_timeout):
                    self.heartbeat()        # all threads busy: stay visible, and recover others' abandoned jobs
                    if self.should_run_maintenance_tasks:
                        self.run_maintenance_tasks()
                if self._stop_requested:
                    return None
                in_flight = self.busy()     # sampled before the dequeue: one ending after it may queue a retry
                result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            finally:
                self._waiting_for_work = False
            if result is not None or timeout is not None or not in_flight:
                return result
            self._wait_for_jobs(in_flight, None)            # burst: one of those jobs ends, then look again

    def _shutdown(self):
        # While waiting for work the main thread may stop at once (teardown finishes the jobs in flight);
        # RQ would wait for the next job to arrive, since the worker is busy. The flag as well: RQ's
        # maintenance catches Exception in places, StopRequested with it, and its loop checks the flag.
        self._stop_requested = True
        if self._waiting_for_work:
            raise StopRequested()
        super()._shutdown()

    def set_state(self, state, pipeline=None):
        # RQ marks the worker idle before each dequeue; it is busy while any job runs.
        if state == WorkerStatus.IDLE and self.busy():
            state = WorkerStatus.BUSY
        super().set_state(state, pipeline)

    def teardown(self):
        """Finish the jobs in flight (a warm shutdown, or the end of a burst), then leave as RQ does."""
        try:
            self._wait_for_jobs(1, None)
        finally:
            super().teardown()

    def unsubscribe(self):
        """Leave the worker's command channel and end its pubsub thread, without stalling.

        RQ sends UNSUBSCRIBE, then stops the thread. If the thread reads the reply first, it loops
        into redis-py's wait for a new subscription (RQ asks for 60 s), and redis-py >= 8.2's
        ``stop()`` joins it with no timeout: a burst run or a warm shutdown hung a minute. Told to
        stop before the channel is left, the thread exits on that reply instead."""
        thread = self.pubsub_thread
        running = getattr(thread, "_running", None)
        if thread is None or running is None:
            return super().unsubscribe()
        self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
        running.clear()
        self.pubsub.unsubscribe()
        thread.join(timeout=defaults.PUBSUB_STOP_SECONDS)
        self.pubsub.close()

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
        threads=ctx.settings.worker_threads,
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
