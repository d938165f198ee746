"""What the worker process prints: job outcomes and warnings, not RQ's every-15-seconds maintenance."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from rq import Queue, Retry

from workers.context import Context
from workers.stores.queue import make_queue
from workers.settings import PROJECT_ROOT
from workers.worker import make_worker


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def cleaning(self, level):
        return [r.getMessage() for r in self.records if r.levelno == level and "cleaning" in r.getMessage()]


def test_a_worker_run_shows_job_outcomes_and_no_maintenance_lines(redis, redis_server, tmp_path):
    job = make_queue(redis).enqueue("os.getpid")
    env = {**os.environ, "REDIS_URL": redis_server.url, "OUTBOX_DIR": str(tmp_path / "outbox")}
    result = subprocess.run([sys.executable, "-m", "relance", "worker", "--burst"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"Job OK ({job.id})" in output                 # a burst run does one maintenance pass first
    assert "cleaning" not in output and "INFO" in output


def test_maintenance_passes_log_at_debug_not_info(settings, redis):
    worker = make_worker(Context.build(settings, redis))
    rq_log, records = logging.getLogger("rq.worker"), Records()
    level = rq_log.level
    rq_log.addHandler(records)
    try:
        rq_log.setLevel(logging.INFO)
        worker.run_maintenance_tasks()
        worker.run_maintenance_tasks()
        worker.log.warning("a warning still shows")
        assert records.cleaning(logging.INFO) == []
        assert [r.getMessage() for r in records.records] == ["a warning still shows"]
        rq_log.setLevel(logging.DEBUG)                     # and when debugging, the lines are there
        worker.run_maintenance_tasks()
        assert records.cleaning(logging.DEBUG) == [f"Worker {worker.name}: cleaning registries for queue: relance"]
    finally:
        rq_log.removeHandler(records)
        rq_log.setLevel(level)


def test_leaving_the_command_channel_ends_promptly_even_when_the_pubsub_thread_reads_the_reply_first(settings,
                                                                                                      redis):
    """RQ's worker leaves its command channel (at the end of a burst run, or a warm shutdown),
    then stops the thread listening on it. Had that thread read the UNSUBSCRIBE reply first, it
    would wait RQ's 60 s for a new subscription, and redis-py >= 8.2 joins it with no timeout:
    the worker hung a minute. Here the thread always reads the reply first."""
    worker = make_worker(Context.build(settings, redis))
    worker.subscribe()
    thread, unsubscribe = worker.pubsub_thread, worker.pubsub.unsubscribe

    def unsubscribe_then_let_the_thread_read_the_reply(*args, **kwargs):
        sent = unsubscribe(*args, **kwargs)
        thread.join(timeout=3)          # it ends here only if it was told to stop first
        return sent
    worker.pubsub.unsubscribe = unsubscribe_then_let_the_thread_read_the_reply

    leaving = threading.Thread(target=worker.unsubscribe, daemon=True)
    leaving.start()
    leaving.join(timeout=20)
    assert not leaving.is_alive(), "the worker hung leaving its command channel"
    assert not thread.is_alive()


def test_a_warm_stop_is_heeded_even_when_its_exception_is_caught_on_its_way(settings, redis):
    """SIGTERM while the worker waits for work raises StopRequested wherever the main thread is; in RQ's
    maintenance (a failure callback of an abandoned job, say) an ``except Exception`` catches it. The
    stop must not be lost: the worker's loop ends at its next turn instead of dequeuing on."""
    worker = make_worker(Context.build(settings, redis))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker._waiting_for_work = True
        try:
            worker.request_stop(signal.SIGTERM, None)
        except Exception:               # as RQ's StartedJobRegistry.cleanup does around a failure callback
            pass
        worker._waiting_for_work = False
        started = time.monotonic()
        worker.work(burst=False, with_scheduler=False)
        assert time.monotonic() - started < worker.dequeue_timeout, "the worker dequeued on after its stop"
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


FOUND_EMPTY = threading.Event()       # the worker's dequeue found the queue empty while a job ran
WORKER: list = []
RUNS: list = []


def fail_until_the_queue_was_found_empty() -> str:
    """A job whose first run fails only once the worker has looked at the queue and found it empty."""
    RUNS.append(1)
    if len(RUNS) == 1:
        assert FOUND_EMPTY.wait(20), "the worker never looked at the queue"
        raise RuntimeError("a failure whose retry is queued after the queue was found empty")
    return "done on its retry"


class EmptyOnce(Queue):
    """RQ's queue, whose first empty dequeue returns only once the running job has failed and ended."""

    @classmethod
    def dequeue_any(cls, *args, **kwargs):
        result = super().dequeue_any(*args, **kwargs)
        if result is None and not FOUND_EMPTY.is_set():
            FOUND_EMPTY.set()
            assert WORKER[0]._wait_for_jobs(1, 20), "the failing job never ended"
        return result


def test_a_burst_run_waits_for_the_retry_a_job_queues_as_the_queue_is_found_empty(settings, redis):
    FOUND_EMPTY.clear()
    RUNS.clear()
    ctx = Context.build(settings, redis)
    job = ctx.queue.enqueue(fail_until_the_queue_was_found_empty, retry=Retry(max=1))
    worker = make_worker(ctx)
    assert worker.threads > 1           # the failing job waits for a dequeue made while it runs
    worker.queue_class = EmptyOnce
    WORKER[:] = [worker]
    worker.work(burst=True, with_scheduler=False)
    job.refresh()
    assert job.get_status() == "finished" and job.return_value() == "done on its retry"
    assert len(RUNS) == 2 and ctx.queue.count == 0
