"""The worker's jobs against a real Redis and the JIRA and SendGrid stand-ins."""

from __future__ import annotations

import email
import json
import time

import pytest

from tests.conftest import PAYLOADS
from tests.jira_events import move, webhook_body
from tests.standins import JiraStandIn
from workers import context as process_context
from workers.stores.audit import Audit
from workers.context import Context
from workers.jobs import fire_timer, process_delivery
from workers.exceptions import TransientError
from workers.stores.timers import member

from tests.support import KEY, QUESTION, deliver, fire_due, kinds, sam_comment, sent

# -- feedback request -------------------------------------------------------

def test_waiting_for_feedback_sends_one_email_with_the_question_in_the_reporters_language(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Waiting for feedback", comment=sam_comment(), actor={"accountId": "acc-sam"}),
            "d1")
    [mail] = sendgrid.messages
    assert mail["personalizations"][0]["to"] == [{"email": "jane@customer.example"}]   # looked up: Cloud hides it
    assert mail["subject"].startswith(f"[{KEY}] Nous avons besoin de votre retour")  # reporter's locale fr_FR
    text = next(c["value"] for c in mail["content"] if c["type"] == "text/plain")
    html = next(c["value"] for c in mail["content"] if c["type"] == "text/html")
    assert QUESTION in text and "Sam Support" in text
    assert f"{jira.url}/browse/{KEY}" in text and f'href="{jira.url}/browse/{KEY}"' in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert mail["custom_args"] == {"issue_key": KEY, "relance_effect": "d1:feedback-request:0"}
    assert mail["categories"] == ["feedback_request"]


def test_without_a_comment_in_the_event_the_latest_support_comment_is_the_question(service, jira, sendgrid):
    jira.add_comment(KEY, "I tried again, same error.")                 # by the reporter
    jira.add_comment(KEY, "Could you send the logs?", author="acc-sam")
    jira.add_comment(KEY, "Here is a screenshot.")                      # by the reporter
    deliver(service, move(jira, KEY, "Waiting for feedback"), "d1")
    text = next(c["value"] for c in sendgrid.messages[0]["content"] if c["type"] == "text/plain")
    assert "Could you send the logs?" in text and "screenshot" not in text


def test_a_redelivered_or_rerun_delivery_sends_no_second_email(service, jira, sendgrid):
    body = move(jira, KEY, "Waiting for feedback", comment=sam_comment())
    deliver(service, body, "d1")
    deliver(service, body, "d1")
    assert process_delivery("d1") == "already processed"
    assert len(sendgrid.messages) == 1


def test_a_reporter_whose_email_is_hidden_gets_no_mail_and_the_timeline_says_why(service, jira, sendgrid):
    jira.add_user(account_id="acc-ghost", email=None, display_name="Ghost")
    jira.add_issue("SUP-2", status="In Progress", reporter="acc-ghost")
    deliver(service, move(jira, "SUP-2", "Waiting for feedback"), "d1")
    assert sendgrid.messages == []
    [skipped] = [e for e in Audit(service.redis).timeline("SUP-2") if e["kind"] == "effect skipped"]
    assert "reporter (acc-ghost) has no visible email address" in skipped["detail"]


# -- auto-close -------------------------------------------------------------

def test_resolved_then_untouched_is_closed_in_jira_and_the_customer_told(service, jira, sendgrid):
    t0 = int(time.time() * 1000)
    deliver(service, move(jira, KEY, "Resolved", ts_ms=t0), "d1")
    timer = service.timers.get("auto-close", KEY)
    assert timer.due == pytest.approx(t0 / 1000 + 5 * 86400)
    assert fire_due(service, timer.due - 1) == 0        # not before its time
    assert fire_due(service, timer.due) == 1
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Closed"
    posted = [r for r in jira.requests if r.method == "POST" and r.path.endswith("/transitions")]
    assert len(posted) == 1
    [mail] = sent(sendgrid, "auto_closed")
    assert mail["subject"].startswith(f"[{KEY}] Ticket clos")     # in the reporter's French
    [notice] = sent(sendgrid, "resolved_notice")     # sent when it was resolved
    assert notice["personalizations"][0]["to"] == [{"email": "jane@customer.example"}]
    assert service.timers.get("auto-close", KEY) is None
    assert kinds(service)[-3:] == ["timer fired", "effect done", "effect done"]


def test_leaving_resolved_cancels_the_timer_and_a_reopen_escalates(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Resolved"), "d1")
    deliver(service, move(jira, KEY, "Reopened", comment={"id": "5", "body": "Still broken on 2.3",
                                                            "author": {"accountId": "acc-jane"}}), "d2")
    assert service.timers.get("auto-close", KEY) is None
    issue = jira.issue(KEY)["fields"]
    assert (issue["priority"]["name"], issue["labels"], issue["status"]["name"]) == ("High", ["escalated"], "Reopened")
    [mail] = sent(sendgrid, "escalation")
    assert mail["personalizations"][0]["to"] == [{"email": "support-leads@example.com"}]
    assert "Still broken on 2.3" in mail["content"][0]["value"]


def test_a_late_resolved_delivery_after_a_reopen_arms_nothing(service, jira, sendgrid):
    t0 = int(time.time() * 1000)
    resolved = move(jira, KEY, "Resolved", ts_ms=t0)
    deliver(service, move(jira, KEY, "Reopened", ts_ms=t0 + 1000), "d2")   # arrives first
    deliver(service, resolved, "d1")                                         # JIRA's retry, late
    assert service.timers.get("auto-close", KEY) is None
    fire_due(service, time.time() + 10 * 86400)             # (support-silence fires: the ticket is reopened)
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Reopened"
    assert not [r for r in jira.requests if r.method == "POST" and r.path.endswith("/transitions")]


def test_a_due_timer_rechecks_jira_and_never_closes_a_ticket_that_moved_on(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Resolved"), "d1")
    jira.set_status(KEY, "Reopened")             # the webhook for this never arrives
    fire_due(service, time.time() + 6 * 86400)
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Reopened"
    assert sent(sendgrid, "auto_closed") == []
    assert "timer skipped" in kinds(service)


def test_re_entering_resolved_re_arms_one_timer(service, jira):
    t0 = int(time.time() * 1000)
    deliver(service, move(jira, KEY, "Resolved", ts_ms=t0), "d1")
    deliver(service, move(jira, KEY, "Reopened", ts_ms=t0 + 1000), "d2")
    deliver(service, move(jira, KEY, "Resolved", ts_ms=t0 + 2000), "d3")
    assert [t.ticket for t in service.timers.pending()] == [KEY]
    assert service.timers.get("auto-close", KEY).due == pytest.approx((t0 + 2000) / 1000 + 5 * 86400)


def test_a_stale_timer_generation_does_nothing(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Resolved"), "d1")
    assert fire_timer(member("auto-close", KEY), "not-the-generation") == "superseded"
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Resolved"


# -- failures ---------------------------------------------------------------

def test_jira_429_with_retry_after_is_waited_out(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Resolved"), "d1")
    jira.fail_next(1, status=429, retry_after=1, path_contains="/transitions")
    fire_due(service, time.time() + 6 * 86400)
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Closed"
    assert [r.status for r in jira.requests if r.path.endswith("/transitions")][:2] == [429, 200]


def test_a_mail_outage_retries_the_email_without_closing_twice(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Resolved"), "d1")
    timer = service.timers.get("auto-close", KEY)
    sendgrid.fail_next(1, status=500)
    with pytest.raises(TransientError):
        fire_timer(member("auto-close", KEY), timer.generation)      # what RQ sees, and retries
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Closed"
    assert fire_timer(member("auto-close", KEY), timer.generation) == "fired"
    assert len(sent(sendgrid, "auto_closed")) == 1
    assert len([r for r in jira.requests if r.method == "POST" and r.path.endswith("/transitions")]) == 1


def test_a_transient_failure_is_retried_by_rq(service, jira, sendgrid):
    sendgrid.fail_next(1, status=503)
    deliver(service, move(jira, KEY, "Waiting for feedback"), "d1")
    assert [r.status for r in sendgrid.requests] == [503, 202]     # RQ's Retry ran it again
    assert service.queue.fetch_job("delivery-d1").get_status() == "finished"
    assert len(sendgrid.messages) == 1


def test_later_retries_back_off_through_the_scheduler(service, jira, sendgrid):
    sendgrid.fail_next(2, status=503)
    deliver(service, move(jira, KEY, "Waiting for feedback"), "d1")
    job = service.queue.fetch_job("delivery-d1")
    assert job.get_status() == "scheduled" and job.retries_left == 7
    assert sendgrid.messages == []


def test_a_refused_mail_is_recorded_not_retried(service, jira, sendgrid):
    sendgrid.fail_next(1, status=400)
    deliver(service, move(jira, KEY, "Waiting for feedback"), "d1")
    assert service.queue.fetch_job("delivery-d1").get_status() == "finished"
    [failed] = [e for e in Audit(service.redis).timeline(KEY) if e["kind"] == "effect failed"]
    assert "SendGrid refused the message (400)" in failed["detail"]


def test_no_transition_to_closed_fails_the_rule_and_sends_no_email(settings, redis, sendgrid):
    workflow = {"Resolved": {"Reopen": "Reopened"}, "Reopened": {"Resolve": "Resolved"}, "Open": {"Resolve": "Resolved"}}
    with JiraStandIn(workflow=workflow) as jira:
        jira.add_user(account_id="acc-jane", email="jane@customer.example")
        jira.add_issue(KEY, status="Open", reporter="acc-jane")
        ctx = Context.build(settings.replace(jira_base_url=jira.url, jira_user_email=jira.email,
                                             jira_api_token=jira.api_token, sendgrid_api_key=sendgrid.api_key,
                                             sendgrid_api_host=sendgrid.url), redis)
        process_context.use(ctx)
        try:
            deliver(ctx, move(jira, KEY, "Resolved"), "d1")
            fire_due(ctx, time.time() + 6 * 86400)
        finally:
            process_context.use(None)
    timeline = Audit(redis).timeline(KEY)
    [failed] = [e for e in timeline if e["kind"] == "effect failed"]
    assert "no transition of SUP-1 leads to 'Closed' (available: Reopened)" in failed["detail"]
    assert [e["detail"] for e in timeline if e["kind"] == "effect skipped"] == ["not done: transition failed"]
    assert sent(sendgrid, "auto_closed") == []


# -- embedded defaults: outbox and dry run -------------------------------------

def test_without_jira_or_sendgrid_actions_are_dry_run_and_mail_lands_in_the_outbox(settings, redis, jira):
    ctx = Context.build(settings, redis)
    process_context.use(ctx)
    try:
        deliver(ctx, move(jira, KEY, "Resolved", cloud=False), "d1")   # Server payload: emails included
        fire_due(ctx, time.time() + 6 * 86400)
    finally:
        process_context.use(None)
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Resolved"      # nothing sent to JIRA
    assert all(r.method == "GET" for r in jira.requests)
    details = [e.get("detail") for e in Audit(redis).timeline(KEY) if e["kind"] == "effect done"]
    assert "dry run: would move SUP-1 to Closed" in details
    [eml] = list(settings.outbox_dir.glob("timer-*auto-close*.eml"))
    message = email.message_from_bytes(eml.read_bytes())
    assert message["Subject"].startswith(f"[{KEY}] Ticket closed")
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.get_payload()] == ["text/plain", "text/html"]


# -- Data Center and real payloads ----------------------------------------------

def test_data_center_with_a_personal_access_token(settings, redis, sendgrid):
    with JiraStandIn(pat="dc-pat-123") as jira:
        jira.add_user(name="jdoe", email="jdoe@customer.example", display_name="John Doe", locale="en_GB")
        jira.add_issue("DC-1", status="Resolved", reporter="jdoe")
        ctx = Context.build(settings.replace(jira_base_url=jira.url, jira_pat="dc-pat-123",
                                             sendgrid_api_key=sendgrid.api_key, sendgrid_api_host=sendgrid.url),
                            redis)
        process_context.use(ctx)
        try:
            deliver(ctx, move(jira, "DC-1", "Reopened", cloud=False), "d1")
        finally:
            process_context.use(None)
        assert {r.headers.get("Authorization") for r in jira.requests} == {"Bearer dc-pat-123"}
        assert jira.issue("DC-1")["fields"]["labels"] == ["escalated"]
    assert sendgrid.messages[0]["subject"].startswith("[DC-1] Reopened by John Doe")


@pytest.mark.parametrize("name", sorted(p.name for p in PAYLOADS.glob("*.json")))
def test_every_real_payload_is_processed_or_cleanly_ignored_by_the_worker(settings, redis, name):
    ctx = Context.build(settings, redis)            # dry run: payloads name JIRA sites we cannot reach
    process_context.use(ctx)
    try:
        deliver(ctx, json.loads((PAYLOADS / name).read_text()), "d1")
    finally:
        process_context.use(None)
    assert ctx.queue.fetch_job("delivery-d1").get_status() == "finished"
    assert ctx.deliveries.is_done("d1")


# -- the default rules' other emails ---------------------------------------------

def test_a_new_ticket_is_acknowledged_in_the_reporter_s_language(service, jira, sendgrid):
    body = webhook_body(jira, KEY)
    body["webhookEvent"], body["issue_event_type_name"] = "jira:issue_created", "issue_created"
    deliver(service, body, "c1")
    [mail] = sent(sendgrid, "ticket_received")
    assert mail["personalizations"][0]["to"] == [{"email": "jane@customer.example"}]
    text = mail["content"][0]["value"]
    assert text.startswith("Bonjour Jane Customer") and "reproduire" in text


def test_a_ticket_still_waiting_after_three_days_gets_a_reminder(service, jira, sendgrid):
    t0 = int(time.time() * 1000) - 3 * 86400 * 1000       # it entered Waiting for feedback 3 days ago
    deliver(service, move(jira, KEY, "Waiting for feedback", ts_ms=t0), "d1")
    assert fire_due(service, time.time()) == 1
    [reminder] = sent(sendgrid, "feedback_reminder")
    assert "3\xa0jours" in reminder["content"][0]["value"]


def test_the_resolved_notice_says_when_the_ticket_will_close(service, jira, sendgrid):
    t0 = 1_795_000_000_000                                  # 2026-11-18 08:26 UTC
    deliver(service, move(jira, KEY, "Resolved", ts_ms=t0), "d1")
    [notice] = sent(sendgrid, "resolved_notice")
    assert "23 novembre 2026" in notice["content"][0]["value"]     # + 5 days, reporter in Europe/Paris


def test_timers_of_two_tickets_never_share_effects(service, jira, sendgrid):
    jira.add_issue("SUP-2", status="In Progress", reporter="acc-jane")
    deliver(service, move(jira, KEY, "Resolved"), "d1")
    deliver(service, move(jira, "SUP-2", "Resolved"), "d2")
    for ticket in (KEY, "SUP-2"):       # the same generation on both (say, a hand-armed timer)
        service.timers.arm("auto-close", ticket, time.time(), "same-gen")
    assert fire_due(service, time.time()) == 2
    assert [jira.issue(k)["fields"]["status"]["name"] for k in (KEY, "SUP-2")] == ["Closed", "Closed"]
    assert len(sent(sendgrid, "auto_closed")) == 2


def test_a_timer_for_a_ticket_jira_no_longer_has_is_dropped(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Resolved"), "d1")
    timer = service.timers.get("auto-close", KEY)
    service.timers.arm("auto-close", "SUP-404", time.time(), timer.generation)   # a ticket deleted in JIRA
    fire_due(service, time.time())
    [firing] = [j for j in service.queue.finished_job_registry.get_job_ids() if j.startswith("timers-")]
    assert service.queue.fetch_job(firing).return_value() == "1 dropped"
    assert service.timers.get("auto-close", "SUP-404") is None
    assert "timer dropped" in [e["kind"] for e in Audit(service.redis).timeline("SUP-404")]


def test_the_timeline_says_a_timer_was_cancelled_only_when_one_was_pending(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Waiting for feedback"), "d1")     # leaves open: no silence timer armed
    assert "timer cancelled" not in kinds(service)
    deliver(service, move(jira, KEY, "Resolved"), "d2")                 # cancels the pending reminder
    [cancel] = [e for e in Audit(service.redis).timeline(KEY) if e["kind"] == "timer cancelled"]
    assert cancel["rule"] == "feedback-reminder"


def test_a_processed_body_is_kept_compressed_for_dedupe_and_reads_back_as_sent(service, jira, sendgrid):
    from tests.jira_events import move
    from tests.support import deliver
    body = move(jira, "SUP-1", "Waiting for feedback")
    deliver(service, body, "z1")
    raw = service.redis.get(service.deliveries.key("z1"))
    assert raw.startswith(b"\x00z") and len(raw) < len(json.dumps(body)) / 2
    assert json.loads(service.deliveries.body("z1")) == body
    assert 0 < service.redis.ttl(service.deliveries.key("z1")) <= service.deliveries.ttl
