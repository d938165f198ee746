"""What a delivery may make relance do: JIRA says to whom and about what; a payload only says that
something happened. Keys never become paths; a clock far ahead is not believed; logs keep no
personal data. Against a real Redis and the JIRA and SendGrid stand-ins."""

from __future__ import annotations

import json
import logging
import time

import pytest

from tests.jira_events import move, webhook_body
from tests.support import KEY, deliver, kinds, sam_comment, sent
from workers.stores.audit import Audit
from workers.core.events import parse_event
from workers.exceptions import JiraError, PayloadError
from workers.clients.jira import JiraClient
from workers.core.lifecycle import TicketMemory, read_event
from workers.core.rules import load_rules
from workers.settings import PROJECT_ROOT


def created(jira, key, **changes):
    body = webhook_body(jira, key)
    body["webhookEvent"], body["issue_event_type_name"] = "jira:issue_created", "issue_created"
    for path, value in changes.items():
        target = body
        *parents, last = path.split(".")
        for p in parents:
            target = target[p]
        target[last] = value
    return body


# -- forged or inconsistent deliveries -------------------------------------------

def test_a_forged_creation_for_a_ticket_jira_does_not_know_sends_nothing(service, jira, sendgrid):
    body = created(jira, KEY)
    body["issue"]["key"] = "SUP-999"
    body["issue"]["fields"]["reporter"] = {"accountId": "x", "emailAddress": "victim@elsewhere.example",
                                           "displayName": "Victim"}
    body["issue"]["fields"]["summary"] = "Buy cheap watches at evil.example"
    deliver(service, body, "forged-1")
    assert sendgrid.requests == []
    [skip] = [e for e in Audit(service.redis).timeline("SUP-999") if e["kind"] == "rule skipped"
              and e["rule"] == "acknowledge"]
    assert "JIRA does not show the ticket" in skip["why"]


def test_recipient_and_summary_come_from_jira_not_from_the_payload(service, jira, sendgrid):
    body = created(jira, KEY)
    body["issue"]["fields"]["reporter"] = {"accountId": "acc-jane", "emailAddress": "victim@elsewhere.example"}
    body["issue"]["fields"]["summary"] = "Buy cheap watches at evil.example"
    deliver(service, body, "c1")
    [mail] = sent(sendgrid, "ticket_received")
    assert mail["personalizations"][0]["to"] == [{"email": "jane@customer.example"}]
    assert "watches" not in json.dumps(mail) and "Login fails" in mail["subject"]


def test_a_comment_jira_does_not_have_is_never_quoted_to_the_customer(service, jira, sendgrid):
    jira.add_comment(KEY, "Could you send the logs?", author="acc-sam")
    jira.set_status(KEY, "Waiting for feedback")
    body = webhook_body(jira, KEY, "In Progress", "Waiting for feedback",
                        comment=sam_comment("Pay the invoice at evil.example"))     # not in JIRA
    deliver(service, body, "d1")
    text = sent(sendgrid, "feedback_request")[0]["content"][0]["value"]
    assert "Could you send the logs?" in text and "evil.example" not in text


def test_a_rule_does_not_fire_for_a_state_jira_says_the_ticket_is_not_in(service, jira, sendgrid):
    body = webhook_body(jira, KEY, "In Progress", "Waiting for feedback")    # JIRA still shows In Progress
    deliver(service, body, "d1")
    assert sent(sendgrid, "feedback_request") == []
    [skip] = [e for e in Audit(service.redis).timeline(KEY) if e["kind"] == "rule skipped"
              and e.get("delivery") == "d1"]
    assert skip["rule"] == "feedback-request" and "no longer waiting_for_feedback" in skip["why"]


def test_a_delivery_that_fires_no_rule_asks_jira_nothing_and_one_that_does_asks_once(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Open"), "d1")                       # In Progress -> Open: same state
    assert jira.requests == []
    deliver(service, move(jira, KEY, "Waiting for feedback"), "d2")
    assert [r.path for r in jira.requests if r.path.startswith(f"/rest/api/2/issue/{KEY}")] == [
        f"/rest/api/2/issue/{KEY}"]


# -- nothing from a payload becomes a path ----------------------------------------

@pytest.mark.parametrize("key", ["../../../../rest/api/2/priority", "SUP-1/../../priority", "SUP-1\n", "sup 1",
                                 "SUP-1?fields=x", "SUP-١", "-1", "A" * 70 + "-1"])
def test_an_issue_key_that_is_not_a_jira_key_is_refused_where_the_event_is_read(key):
    body = {"webhookEvent": "jira:issue_updated", "issue": {"key": key, "id": "10001", "fields": {}}}
    with pytest.raises(PayloadError, match="not a JIRA issue key"):
        parse_event(body)


@pytest.mark.parametrize("issue_id", ["10001/../../x", "1e3", "٣", "10001\n", ""])
def test_an_issue_id_that_is_not_digits_is_refused(issue_id):
    body = {"webhookEvent": "jira:issue_updated", "issue": {"key": "SUP-1", "id": issue_id, "fields": {}}}
    if issue_id == "":
        assert parse_event(body).issue_id is None          # empty is absent, not a path
        return
    with pytest.raises(PayloadError, match="not a JIRA issue id"):
        parse_event(body)


def test_a_path_in_a_key_is_ignored_by_the_worker_and_never_reaches_jira(service, jira, sendgrid):
    body = created(jira, KEY)
    body["issue"]["key"] = "../../../../rest/api/2/priority"
    deliver(service, body, "p1")
    assert jira.requests == [] and sendgrid.requests == []
    assert service.deliveries.outcome("p1").startswith("ignored: '../../../../rest/api/2/priority' is not a JIRA")


def test_the_jira_client_itself_refuses_a_key_that_would_leave_the_issue_path(jira):
    client = JiraClient(jira.url, jira.email, jira.api_token)
    with pytest.raises(JiraError, match="not an issue key"):
        client.issue("../../../../rest/api/2/priority")
    assert jira.requests == []


# -- the clock ------------------------------------------------------------------

def test_an_event_dated_far_ahead_is_read_as_now_and_later_events_still_count():
    rules = load_rules(PROJECT_ROOT / "rules.yaml")
    now = 1_800_000_000_000
    future = parse_event({"webhookEvent": "jira:issue_updated", "timestamp": now + 365 * 86400_000,
                          "issue": {"key": "SUP-1", "fields": {"status": {"name": "Resolved"}}},
                          "changelog": {"items": [{"field": "status", "fromString": "Open", "toString": "Resolved"}]}})
    reading = read_event(rules, future, TicketMemory(), now)
    assert reading.memory.ts_ms == now and "ahead of the clock" in reading.clamped
    genuine = parse_event({"webhookEvent": "jira:issue_updated", "timestamp": now + 60_000,
                           "issue": {"key": "SUP-1", "fields": {"status": {"name": "Reopened"}}},
                           "changelog": {"items": [{"field": "status", "fromString": "Resolved",
                                                    "toString": "Reopened"}]}})
    later = read_event(rules, genuine, reading.memory, now + 60_000)
    assert not later.stale and later.transition.entered == "reopened"


def test_a_few_minutes_of_skew_is_believed():
    rules = load_rules(PROJECT_ROOT / "rules.yaml")
    now = 1_800_000_000_000
    event = parse_event({"webhookEvent": "jira:issue_updated", "timestamp": now + 120_000,
                         "issue": {"key": "SUP-1", "fields": {"status": {"name": "Resolved"}}}})
    reading = read_event(rules, event, TicketMemory(), now)
    assert reading.memory.ts_ms == now + 120_000 and not reading.clamped


def test_a_future_dated_delivery_is_noted_on_the_timeline_and_does_not_block_the_next(service, jira, sendgrid):
    far = int(time.time() * 1000) + 30 * 86400_000
    deliver(service, move(jira, KEY, "Resolved", ts_ms=far), "d1")
    deliver(service, move(jira, KEY, "Reopened"), "d2")
    timeline = Audit(service.redis).timeline(KEY)
    assert [e for e in timeline if e["kind"] == "clock"][0]["delivery"] == "d1"
    assert service.deliveries.outcome("d2") == "left resolved, entered reopened"
    assert service.timers.get("auto-close", KEY) is None
    assert len(sent(sendgrid, "escalation")) == 1


# -- personal data ---------------------------------------------------------------

def test_info_logs_name_the_ticket_but_no_person(service, jira, sendgrid, caplog):
    caplog.set_level(logging.INFO)
    jira.add_comment(KEY, "Could you send the logs?", author="acc-sam")
    deliver(service, move(jira, KEY, "Waiting for feedback"), "d1")
    deliver(service, move(jira, KEY, "Resolved"), "d2")
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    info = "\n".join(r.getMessage() for r in records)
    assert "effect done" in info and KEY in {getattr(r, "ticket", None) for r in records}
    for personal in ("jane@customer.example", "Jane Customer", "sam@support.example", "Sam Support"):
        assert personal not in info
    # The timeline, behind the operator's credentials, still says to whom.
    done = [e for e in Audit(service.redis).timeline(KEY) if e["kind"] == "effect done"]
    assert done[0]["to"] == ["jane@customer.example"]


def test_with_jira_configured_the_ticket_memory_keeps_no_personal_data(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Resolved", cloud=False), "d1")      # Server payload: emails included
    raw = json.dumps({k.decode(): v.decode() for k, v in service.redis.hgetall(f"relance:ticket:{KEY}").items()})
    assert "jane@customer.example" not in raw and "Jane Customer" not in raw and "Login fails" not in raw
    assert kinds(service)[-1] == "effect done"
