"""No timer and no delivery lost, no effect done twice: jobs that give up are kept and retried,
unclear answers from JIRA are checked before acting again, a busy ticket never parks a worker,
a bad address fails one email for good. Real Redis, JIRA and SendGrid stand-ins, RQ workers."""

from __future__ import annotations

import threading
import time

import pytest
from redis.lock import Lock
from rq import Retry

from tests.conftest import service_context
from tests.jira_events import move
from tests.standins import JiraStandIn
from tests.support import KEY, accept, deliver, fire_due, kinds, sent
from workers import context as process_context
from workers.stores.audit import Audit
from workers.context import Context
from workers.exceptions import TicketBusy
from workers.jobs import process_delivery
from workers.stores.timers import member
from workers.worker import run_worker

ONE_RETRY = Retry(max=1, interval=[0])


def give_up_on(ctx, jira, did, body):
    """Run a delivery whose JIRA reads all fail (503) until RQ gives up on it (two attempts)."""
    jira.fail_next(2, status=503, retry_after=None, path_contains=f"/issue/{KEY}", method="GET")
    accept(ctx, body, did, retry=ONE_RETRY)
    run_worker(ctx, burst=True)


# -- jobs that give up -------------------------------------------------------------

def test_a_delivery_whose_retries_run_out_is_kept_and_can_be_retried(service, jira, sendgrid):
    give_up_on(service, jira, "d1", move(jira, KEY, "Waiting for feedback"))
    assert sendgrid.messages == []
    [failure] = service.failures.list()
    assert (failure.kind, failure.ticket, failure.job_id, failure.attempts) == ("delivery", KEY, "delivery-d1", 2)
    assert "503" in failure.reason
    assert "gave up" in kinds(service)
    # Its body and decision are kept as long as the failure record, not the few days of dedupe.
    retention = service.settings.retention
    for key in ("relance:delivery:d1", "relance:delivery:d1:plan", "relance:failure:delivery-d1"):
        assert retention - 60 < service.redis.ttl(key) <= retention, key
    assert service.redis.ttl("rq:job:delivery-d1") > retention - 60      # RQ keeps the failed job as long

    new_id = service.failures.retry("delivery-d1", service.queue)
    run_worker(service, burst=True)
    assert service.queue.fetch_job(new_id).get_status() == "finished"
    assert len(sent(sendgrid, "feedback_request")) == 1
    assert service.failures.list() == []
    assert service.deliveries.is_done("d1")


def test_a_timer_whose_retries_run_out_stays_in_the_index_parked_and_can_be_retried(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Resolved"), "d1")
    timer = service.timers.get("auto-close", KEY)
    jira.fail_next(2, status=503, retry_after=None, path_contains=f"/issue/{KEY}", method="GET")
    [(m, gen, due)] = service.timers.claim(time.time() + 6 * 86400)
    from workers.stores.queue import enqueue_call
    enqueue_call(service.queue, "workers.jobs.fire_timer", "timer-x", (m, gen, due), 60, retry=ONE_RETRY)
    run_worker(service, burst=True)
    [failure] = service.failures.list()
    assert (failure.kind, failure.ticket, failure.args) == ("timer", KEY, (member("auto-close", KEY), gen, due))
    parked = service.timers.get("auto-close", KEY)
    assert parked.generation == timer.generation and parked.due > time.time() + 80 * 86400
    assert service.timers.claim(time.time() + 6 * 86400) == []            # parked: not queued again and again

    service.failures.retry("timer-x", service.queue)
    run_worker(service, burst=True)
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Closed"
    assert len(sent(sendgrid, "auto_closed")) == 1
    assert service.timers.get("auto-close", KEY) is None


def test_a_transient_failure_that_will_be_retried_is_noted_on_the_timeline(service, jira, sendgrid):
    jira.fail_next(1, status=503, retry_after=None, path_contains=f"/issue/{KEY}", method="GET")
    deliver(service, move(jira, KEY, "Waiting for feedback"), "d1")
    [note] = [e for e in Audit(service.redis).timeline(KEY) if e["kind"] == "attempt failed"]
    assert "503" in note["reason"] and note["retries_left"] == 9
    assert len(sent(sendgrid, "feedback_request")) == 1 and service.failures.list() == []


# -- unclear answers: the POST may have been applied ----------------------------------

def test_a_transition_jira_applied_before_answering_5xx_is_not_posted_again(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Resolved"), "d1")
    jira.fail_next(1, status=503, retry_after=1, path_contains="/transitions", method="POST", after_serving=True)
    fire_due(service, time.time() + 6 * 86400)
    posts = [r for r in jira.requests if r.method == "POST" and r.path.endswith("/transitions")]
    assert [r.status for r in posts] == [503]                   # applied, answered 503, never repeated
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Closed"
    done = [e for e in Audit(service.redis).timeline(KEY) if e["kind"] == "effect done" and e["action"] == "transition"]
    assert "after an unclear answer" in done[0]["detail"]
    assert "effect failed" not in kinds(service)
    assert len(sent(sendgrid, "auto_closed")) == 1


@pytest.fixture
def commenting(settings, redis, jira, sendgrid, rules_file):
    """The service with an escalation that also comments on the ticket."""
    rules_file.write_text(rules_file.read_text().replace(
        "      - add_label: escalated\n",
        "      - add_label: escalated\n      - comment: \"Reopened by the customer: escalated to the leads.\"\n"))
    yield service_context(settings, redis, jira, sendgrid)
    process_context.use(None)


def test_a_comment_jira_posted_before_answering_5xx_is_not_posted_twice(commenting, jira, sendgrid):
    jira.set_status(KEY, "Resolved")
    jira.fail_next(1, status=502, retry_after=None, path_contains="/comment", method="POST", after_serving=True)
    deliver(commenting, move(jira, KEY, "Reopened"), "d1")
    bodies = [c["body"] for c in jira.issue(KEY)["fields"]["comment"]["comments"]]
    assert bodies == ["Reopened by the customer: escalated to the leads."]
    assert len(sent(sendgrid, "escalation")) == 1


def test_a_comment_whose_post_never_reached_jira_is_posted_on_retry(commenting, jira, sendgrid):
    jira.set_status(KEY, "Resolved")
    jira.fail_next(1, status=502, retry_after=None, path_contains="/comment", method="POST")   # not applied
    deliver(commenting, move(jira, KEY, "Reopened"), "d1")
    bodies = [c["body"] for c in jira.issue(KEY)["fields"]["comment"]["comments"]]
    assert bodies == ["Reopened by the customer: escalated to the leads."]


# -- the ticket lock -------------------------------------------------------------

def test_the_ticket_lock_is_not_held_while_jira_is_slow(service, jira, sendgrid):
    hold = jira.hold("/rest/api/2/user")             # d1's lookup of the reporter's address hangs
    accept(service, move(jira, KEY, "Waiting for feedback"), "d1")
    first = threading.Thread(target=process_delivery, args=("d1",))
    first.start()
    try:
        jira.held.wait_for(lambda held: held, timeout=10)
        accept(service, move(jira, KEY, "Open"), "d2")
        second = threading.Thread(target=process_delivery, args=("d2",))
        second.start()
        second.join(timeout=3)
        assert not second.is_alive(), "d2 waited for d1's call to JIRA"
        assert service.deliveries.outcome("d2") == "left waiting_for_feedback, entered open"
    finally:
        hold.set()
        first.join(timeout=10)
    assert len(sent(sendgrid, "feedback_request")) == 1


def test_a_job_that_cannot_get_a_busy_ticket_gives_its_attempt_back_quickly(service, jira):
    service.tickets.lock_wait = 0.2
    Lock(service.redis, f"relance:lock:{KEY}", timeout=30).acquire()       # another job holds the ticket
    accept(service, move(jira, KEY, "Waiting for feedback"), "d1")
    started = time.monotonic()
    with pytest.raises(TicketBusy):
        process_delivery("d1")
    assert time.monotonic() - started < 2
    assert service.deliveries.plan("d1") is None and kinds(service) == []    # nothing decided


# -- bad addresses ----------------------------------------------------------------

def test_a_recipient_with_a_line_break_is_a_recorded_failure_of_that_email(settings, redis, sendgrid):
    with JiraStandIn() as jira:
        jira.add_user(account_id="acc-eve", email="eve@customer.example\r\nBcc: all@victims.example",
                      display_name="Eve")
        jira.add_issue(KEY, status="In Progress", reporter="acc-eve")
        ctx = Context.build(settings.replace(jira_base_url=jira.url, jira_user_email=jira.email,
                                             jira_api_token=jira.api_token), redis)      # mail to the outbox
        process_context.use(ctx)
        try:
            deliver(ctx, move(jira, KEY, "Waiting for feedback"), "d1")
        finally:
            process_context.use(None)
    assert ctx.queue.fetch_job("delivery-d1").get_status() == "finished"       # not retried
    [failed] = [e for e in Audit(redis).timeline(KEY) if e["kind"] == "effect failed"]
    assert "cannot send to" in failed["detail"]
    assert not settings.outbox_dir.exists() or list(settings.outbox_dir.iterdir()) == []


def test_an_address_that_is_not_an_address_fails_only_that_email(service, jira, sendgrid):
    jira.add_user(account_id="acc-odd", email="not-an-address", display_name="Odd")
    jira.add_issue("SUP-2", status="In Progress", reporter="acc-odd")
    deliver(service, move(jira, "SUP-2", "Waiting for feedback"), "d1")
    assert service.queue.fetch_job("delivery-d1").get_status() == "finished"
    assert "effect failed" in kinds(service, "SUP-2") and sendgrid.requests == []


# -- orphan timers -------------------------------------------------------------------

def test_a_timer_of_a_ticket_relance_has_forgotten_is_dropped_in_dry_run(settings, redis, jira):
    ctx = Context.build(settings, redis)
    process_context.use(ctx)
    try:
        deliver(ctx, move(jira, KEY, "Resolved", cloud=False), "d1")
        redis.delete(f"relance:ticket:{KEY}")            # its memory expired (retention)
        fire_due(ctx, time.time() + 6 * 86400)
    finally:
        process_context.use(None)
    assert ctx.timers.get("auto-close", KEY) is None
    [dropped] = [e for e in Audit(redis).timeline(KEY) if e["kind"] == "timer dropped"]
    assert "no longer remembers" in dropped["why"]


def test_a_timer_of_a_rule_removed_from_the_file_is_dropped(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Resolved"), "d1")
    service.timers.arm("renamed-rule", KEY, time.time(), "g1")
    fire_due(service, time.time())
    assert service.timers.get("renamed-rule", KEY) is None
    assert "timer dropped" in kinds(service)



# -- effects refused for good ------------------------------------------------------------

def test_a_rule_whose_effect_jira_refused_is_kept_and_retried_once_the_workflow_is_fixed(settings, redis, sendgrid):
    from tests.standins.jira import DEFAULT_WORKFLOW, Workflow

    broken = {"Resolved": {"Reopen": "Reopened"}, "Reopened": {"Resolve": "Resolved"}, "Open": {"Resolve": "Resolved"}}
    with JiraStandIn(workflow=broken) as jira:
        jira.add_user(account_id="acc-jane", email="jane@customer.example")
        jira.add_issue(KEY, status="Open", reporter="acc-jane")
        ctx = service_context(settings, redis, jira, sendgrid)
        try:
            deliver(ctx, move(jira, KEY, "Resolved"), "d1")
            fire_due(ctx, time.time() + 6 * 86400)
            [failure] = ctx.failures.list()
            assert (failure.kind, failure.ticket) == ("effect", KEY)
            assert "transition failed: no transition of SUP-1 leads to 'Closed'" in failure.reason
            assert sent(sendgrid, "auto_closed") == []

            jira.workflow = Workflow(DEFAULT_WORKFLOW)                 # an admin fixes the workflow
            ctx.failures.retry(failure.job_id, ctx.queue)
            run_worker(ctx, burst=True)
        finally:
            process_context.use(None)
        assert jira.issue(KEY)["fields"]["status"]["name"] == "Closed"
    assert len(sent(sendgrid, "auto_closed")) == 1
    assert ctx.failures.list() == []
    assert "rule retried" in kinds(ctx)
