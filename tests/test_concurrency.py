"""One worker runs several jobs at once: different tickets overlap their calls to JIRA and SendGrid,
the jobs of one ticket run one after the other in queue order, and a job's timeout still stops it.
Real Redis, the JIRA and SendGrid stand-ins, RQ's own dequeue, retries and records."""

from __future__ import annotations

import threading
import time

import pytest
from rq import Retry, Worker

from tests.jira_events import move, webhook_body
from tests.support import KEY, accept, kinds, sent
from workers.exceptions import TicketBusy
from workers.sequencing import NO_TICKET, TicketSequencer, running, wait_for_turn
from workers.stores.audit import Audit
from workers.stores.queue import enqueue_call
from workers.worker import run_worker


def slow_job(seconds: float) -> str:
    """A job busy in Python for ``seconds`` (a job that overruns its timeout)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        threading.Event().wait(0.02)
    return "done"


def while_working(ctx, observe, release: threading.Event) -> dict:
    """Run a burst worker (in this thread: RQ installs signal handlers) while ``observe()`` watches from
    another thread; ``release`` is set once it returns or fails. What it returned or raised is given back."""
    seen = {}

    def watch():
        try:
            seen["result"] = observe()
        except BaseException as e:         # reported to the test below, in its own thread
            seen["error"] = e
        finally:
            release.set()
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        run_worker(ctx, burst=True)
    finally:
        release.set()
        watcher.join(timeout=30)
    if "error" in seen:
        raise seen["error"]
    return seen["result"]


@pytest.fixture
def tickets(jira):
    for key in ("SUP-2", "SUP-3"):
        jira.add_issue(key, status="In Progress", reporter="acc-jane")
    return jira


def test_jobs_of_different_tickets_wait_for_jira_at_the_same_time(service, tickets, sendgrid):
    release = tickets.hold("/rest/api/2/user", count=3)           # every reporter lookup hangs until released
    for n, key in enumerate(("SUP-1", "SUP-2", "SUP-3")):
        accept(service, move(tickets, key, "Waiting for feedback"), f"d{n}")
    def observe():         # three jobs in flight at once, each waiting for JIRA; RQ shows them (rq info)
        tickets.held.wait_for(lambda held: len(held) == 3, timeout=20)
        [worker] = Worker.all(queue=service.queue)
        return worker.get_state(), sorted(e.job_id for e in worker.get_current_executions())
    state, running_jobs = while_working(service, observe, release)
    assert state == "busy" and running_jobs == ["delivery-d0", "delivery-d1", "delivery-d2"]
    assert sorted(m["custom_args"]["issue_key"] for m in sent(sendgrid, "feedback_request")) == \
        ["SUP-1", "SUP-2", "SUP-3"]
    assert all(service.queue.fetch_job(f"delivery-d{n}").get_status() == "finished" for n in range(3))


def test_jobs_of_one_ticket_run_in_queue_order_while_other_tickets_go_on(service, tickets, sendgrid):
    release = tickets.hold(f"/issue/{KEY}")                      # d1 waits for JIRA's answer on SUP-1
    accept(service, move(tickets, KEY, "Waiting for feedback"), "d1")
    accept(service, webhook_body(tickets, KEY, "Waiting for feedback", "Resolved"), "d2")    # then SUP-1 resolved
    accept(service, move(tickets, "SUP-2", "Waiting for feedback"), "d3")

    def observe():
        tickets.held.wait_for(lambda held: held, timeout=20)
        sendgrid.wait_for(lambda mails: [m for m in mails if m["custom_args"]["issue_key"] == "SUP-2"], timeout=20)
        return service.deliveries.plan("d1"), service.deliveries.plan("d2")
    d1_plan, d2_plan = while_working(service, observe, release)
    # SUP-2's delivery, queued after d2, was done while d2 was not even decided: d1 still ran.
    assert d1_plan is not None and d2_plan is None
    deliveries = [e["delivery"] for e in Audit(service.redis).timeline(KEY) if e["kind"] == "delivery"]
    assert deliveries == ["d1", "d2"]
    assert [m["custom_args"]["issue_key"] for m in sent(sendgrid, "feedback_request")] == ["SUP-2", KEY]


def test_a_job_over_its_timeout_is_stopped_in_its_thread_and_retried_by_rq(service):
    enqueue_call(service.queue, "tests.test_concurrency.slow_job", "slow", (30,), timeout=1,
                 retry=Retry(max=1, interval=[0]))
    started = time.monotonic()
    run_worker(service, burst=True)
    assert time.monotonic() - started < 10                   # two attempts of about 1 s, not of 30 s
    job = service.queue.fetch_job("slow")
    assert job.get_status() == "failed"
    assert "JobTimeoutException" in job.latest_result().exc_string
    assert job.retries_left == 0


def test_a_failing_job_is_retried_within_the_same_burst_while_others_run(service, tickets, sendgrid):
    tickets.fail_next(1, status=503, retry_after=None, path_contains="/issue/SUP-2", method="GET")
    for n, key in enumerate(("SUP-1", "SUP-2", "SUP-3")):
        accept(service, move(tickets, key, "Waiting for feedback"), f"d{n}")
    run_worker(service, burst=True)
    assert len(sent(sendgrid, "feedback_request")) == 3
    assert "attempt failed" in kinds(service, "SUP-2")


# -- the sequencer alone -------------------------------------------------------------

def declare_in_thread(sequencer, turn, ticket, order, timeout=10):
    def run():
        running(sequencer, turn)
        wait_for_turn(ticket, timeout)
        order.append(turn)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_job_waits_for_earlier_jobs_of_its_ticket_and_for_earlier_unknown_ones_only():
    sequencer, order = TicketSequencer(), []
    first, unknown, other, second = (sequencer.admit() for _ in range(4))
    aside = sequencer.admit(NO_TICKET)                          # about no ticket: orders nothing
    running(sequencer, first)
    wait_for_turn("SUP-1")                                      # nothing earlier: goes at once
    waiting = declare_in_thread(sequencer, second, "SUP-1", order)
    elsewhere = declare_in_thread(sequencer, other, "SUP-2", order)
    elsewhere.join(timeout=0.5)
    assert elsewhere.is_alive(), "SUP-2 went on before the earlier job said which ticket it is about"
    running(sequencer, unknown)
    wait_for_turn("SUP-3")
    elsewhere.join(timeout=10)
    assert order == [other]                                     # SUP-2 goes; SUP-1's second job waits
    sequencer.done(first)
    waiting.join(timeout=10)
    assert order == [other, second]
    assert sequencer.in_flight() == 4 and aside is not None
    running(None, None)


def test_a_job_that_waits_too_long_for_its_ticket_gives_its_attempt_back():
    sequencer = TicketSequencer()
    sequencer.declare(sequencer.admit(), "SUP-1")
    later = sequencer.admit()
    with pytest.raises(TicketBusy):
        sequencer.declare(later, "SUP-1", timeout=0.2)


def test_outside_a_threaded_worker_a_job_never_waits():
    wait_for_turn(KEY, timeout=0)        # no sequencer for this thread: returns at once
