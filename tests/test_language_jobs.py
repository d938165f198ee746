"""The rules language through the worker, against a real Redis and the JIRA, SendGrid and chat
stand-ins: the seed's whole loop and every new action."""

from __future__ import annotations

import time

import pytest

from tests.conftest import service_context
from tests.jira_events import move, webhook_body
from tests.standins.chat import ChatStandIn
from tests.support import KEY, deliver, fire_due, kinds, sent
from workers import context as process_context
from workers.stores.audit import Audit

JANE = {"accountId": "acc-jane", "displayName": "Jane Customer"}
SAM = {"accountId": "acc-sam", "displayName": "Sam Support"}


def commented(jira, author, body="Here is the log you asked for."):
    """A comment made in JIRA and the comment_created webhook JIRA Cloud sends for it (no reporter)."""
    comment = jira.add_comment(KEY, body, author=author["accountId"])
    webhook = webhook_body(jira, KEY, comment=comment, actor=author)
    webhook["webhookEvent"] = "comment_created"
    webhook.pop("changelog", None)
    del webhook["issue"]["fields"]["reporter"]
    return webhook


# -- the seed's loop with the default rules -------------------------------------

def test_a_customer_who_answers_in_a_comment_gets_the_ticket_moved_back_to_open(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Waiting for feedback"), "d1")
    deliver(service, commented(jira, JANE), "c1")
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Open"
    done = [e for e in Audit(service.redis).timeline(KEY) if e["kind"] == "effect done"]
    assert done[-1]["rule"] == "customer-answered" and "moved to Open" in done[-1]["detail"]


def test_a_comment_by_support_on_a_ticket_waiting_for_feedback_changes_nothing(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Waiting for feedback"), "d1")
    deliver(service, commented(jira, SAM, "Any news?"), "c1")
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Waiting for feedback"
    assert not [r for r in jira.requests if r.method == "POST" and r.path.endswith("/transitions")]


def test_the_same_comment_sent_twice_by_jira_moves_the_ticket_once(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Waiting for feedback"), "d1")
    body = commented(jira, JANE)
    deliver(service, body, "c1")
    again = dict(body, webhookEvent="jira:issue_updated", issue_event_type_name="issue_commented")
    deliver(service, again, "c2")
    assert len([r for r in jira.requests if r.method == "POST" and r.path.endswith("/transitions")]) == 1


def test_a_customer_reply_on_a_resolved_ticket_is_flagged_to_support_not_reopened(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Resolved"), "d1")
    deliver(service, commented(jira, JANE, "Thanks, it works!"), "c1")
    issue = jira.issue(KEY)["fields"]
    assert issue["status"]["name"] == "Resolved" and "customer-replied" in issue["labels"]
    [mail] = sent(sendgrid, "customer_replied")
    assert mail["personalizations"][0]["to"] == [{"email": "support-leads@example.com"}]   # unassigned
    assert "Thanks, it works!" in mail["content"][0]["value"]


def test_a_ticket_support_leaves_silent_for_a_working_day_reaches_the_assignee(service, jira, sendgrid):
    jira.set_status(KEY, "Resolved")
    reopened_at = time.time()
    deliver(service, move(jira, KEY, "Reopened", actor=JANE), "d1")
    [timer] = [t for t in service.timers.pending() if t.rule == "support-silence"]
    assert timer.due >= reopened_at + 24 * 3600 - 1           # one working day is at least a day
    fire_due(service, timer.due)
    [mail] = sent(sendgrid, "support_silence")
    assert mail["personalizations"][0]["to"] == [{"email": "support-leads@example.com"}]


def test_support_s_comment_cancels_the_silence_timer(service, jira, sendgrid):
    jira.set_status(KEY, "Resolved")
    deliver(service, move(jira, KEY, "Reopened", actor=JANE), "d1")
    deliver(service, commented(jira, SAM, "Looking into it."), "c1")
    assert [t for t in service.timers.pending() if t.rule == "support-silence"] == []
    assert "timer cancelled" in kinds(service)


def test_relance_s_own_comment_is_not_support_s_answer(service, jira, sendgrid):
    jira.set_status(KEY, "Resolved")
    deliver(service, move(jira, KEY, "Reopened", actor=JANE), "d1")
    bot = {"accountId": "relance-bot"}
    comment = jira.add_comment(KEY, "Escalated.")                       # by relance's own account
    deliver(service, commented(jira, bot) | {"comment": comment}, "c1")
    assert [t.rule for t in service.timers.pending()] == ["support-silence"]


# -- every action ---------------------------------------------------------------

RULES = """
  - name: every-action
    when: {entered: reopened, by: customer}
    if: {priority: [Medium, High], lacks_label: quiet}
    do:
      - set_priority: Highest
      - remove_label: waiting
      - assign: reporter
      - comment: {template: escalation_note}
      - notify: {url_env: RELANCE_TEST_CHAT_URL, template: escalation_chat}
"""


@pytest.fixture
def chat(monkeypatch):
    with ChatStandIn() as server:
        monkeypatch.setenv("RELANCE_TEST_CHAT_URL", server.webhook_url)
        yield server


@pytest.fixture
def acting(settings, redis, jira, sendgrid, rules_file, chat):
    text = rules_file.read_text()
    rules_file.write_text(text.replace("\nrules:\n", "\nrules:\n" + RULES.lstrip("\n") + "\n", 1))
    yield service_context(settings, redis, jira, sendgrid)
    process_context.use(None)


def test_every_action_acts_on_jira_and_chat(acting, jira, chat):
    jira.set_status(KEY, "Resolved")
    acting.effects.jira.add_label(KEY, "waiting")
    deliver(acting, move(jira, KEY, "Reopened", actor=JANE), "d1")
    issue = jira.issue(KEY)["fields"]
    assert issue["priority"]["name"] == "Highest" and "waiting" not in issue["labels"]
    assert issue["assignee"]["accountId"] == "acc-jane"
    assert any("Reopened" in c["body"] or "rouvert" in c["body"] for c in issue["comment"]["comments"])
    [message] = chat.messages
    assert KEY in message["text"]


def test_conditions_are_checked_on_jira_s_view_when_acting(acting, jira, chat):
    jira.set_status(KEY, "Resolved")
    body = move(jira, KEY, "Reopened", actor=JANE)
    acting.effects.jira.add_label(KEY, "quiet")          # added in JIRA (as support would) before relance acts
    deliver(acting, body, "d1")
    assert chat.messages == []
    skipped = [e for e in Audit(acting.redis).timeline(KEY) if e["kind"] == "rule skipped"
               and e.get("rule") == "every-action"]
    assert skipped and "has label quiet" in skipped[0]["why"]


def test_a_notification_whose_url_is_not_set_is_skipped_with_the_reason(acting, jira, chat, monkeypatch):
    monkeypatch.delenv("RELANCE_TEST_CHAT_URL")
    jira.set_status(KEY, "Resolved")
    deliver(acting, move(jira, KEY, "Reopened", actor=JANE), "d1")
    [skip] = [e for e in Audit(acting.redis).timeline(KEY) if e["kind"] == "effect skipped"
              and e["action"] == "notify"]
    assert "RELANCE_TEST_CHAT_URL is not set" in skip["detail"]


# -- customers: JIRA groups -------------------------------------------------------------

def test_a_member_of_a_customer_group_answering_counts_as_the_customer(settings, redis, jira, sendgrid, rules_file):
    jira.add_user(account_id="acc-bob", email="bob@customer.example", display_name="Bob, Jane's colleague")
    jira.add_group("acme-customers", ["acc-bob"])
    rules_file.write_text(rules_file.read_text().replace("customers: []", 'customers: ["acme-customers"]'))
    ctx = service_context(settings, redis, jira, sendgrid)
    try:
        deliver(ctx, move(jira, KEY, "Waiting for feedback"), "d1")
        deliver(ctx, commented(jira, {"accountId": "acc-bob"}), "c1")
    finally:
        process_context.use(None)
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Open"
    asked = [r.query for r in jira.requests if r.path.endswith("/group/member")]
    assert asked == [{"groupname": "acme-customers", "startAt": "0", "maxResults": "50"}]   # then cached


def test_moving_back_to_open_finds_the_open_status_of_a_french_site(settings, redis, sendgrid, rules_file):
    from tests.standins import JiraStandIn
    workflow = {"En attente de feedback": {"Donner du feedback": "Ouvert", "Résoudre": "Résolu"},
                "Ouvert": {"Demander du feedback": "En attente de feedback"}}
    with JiraStandIn(workflow=workflow) as jira:
        jira.add_user(account_id="acc-jane", email="jane@customer.example", display_name="Jeanne")
        jira.add_issue(KEY, status="Ouvert", reporter="acc-jane")
        ctx = service_context(settings, redis, jira, sendgrid)
        try:
            deliver(ctx, move(jira, KEY, "En attente de feedback"), "d1")
            deliver(ctx, commented(jira, JANE, "Voici le journal."), "c1")
        finally:
            process_context.use(None)
        assert jira.issue(KEY)["fields"]["status"]["name"] == "Ouvert"
    done = [e for e in Audit(redis).timeline(KEY) if e["kind"] == "effect done" and e["action"] == "transition"]
    assert "moved to Ouvert by transition 'Donner du feedback'" in done[0]["detail"]


@pytest.mark.parametrize("name, reporter, role", [
    ("05-server-2019-issue-updated-issue-commented", None, "support"),          # TestUser on creator.user's
    ("06-server-2015-issue-updated-with-comment", None, "customer"),            # admin on admin's own ticket
    ("07-cloud-2019-comment-created", "5c5f880629be9642ba529340", "customer"),  # Cloud: reporter from memory
    ("08-cloud-2018-comment-created", "someone-else", "support"),
    ("10-cloud-2024-comment-created-accountid", "619a4432ebce470067f20384", "customer"),
])
def test_real_comment_payloads_tell_the_customer_from_support(name, reporter, role):
    from tests.conftest import payload
    from workers.core.decisions import decide
    from workers.core.events import parse_event
    from workers.core.lifecycle import TicketMemory
    from workers.core.rules import load_rules
    from workers.settings import PROJECT_ROOT
    rules = load_rules(PROJECT_ROOT / "rules.yaml")
    event = parse_event(payload(name))
    memory = TicketMemory(status="Waiting for feedback", state="waiting_for_feedback", reporter_account=reporter)
    plan = decide(rules, event, memory, event.timestamp_ms or 0)
    assert f"a comment by {role}" in dict(plan.skipped).get("acknowledge", "")


def test_ticket_text_in_a_chat_message_cannot_mention_a_whole_channel(acting, jira, chat):
    jira.add_issue("SUP-9", summary="Urgent <!channel> <users/all> & more", status="Resolved", reporter="acc-jane",
                   priority="High")
    deliver(acting, move(jira, "SUP-9", "Reopened", actor=JANE), "d9")
    [message] = chat.messages
    assert "<!channel>" not in message["text"] and "&lt;!channel&gt;" in message["text"]
    assert "<users/all>" not in message["text"] and "&amp; more" in message["text"]


REPEATING = """
  - name: nag
    when: {entered: waiting_for_feedback}
    after: 2d
    repeat: {every: 3d, times: 2}
    do:
      - email: {to: reporter, template: feedback_reminder}
"""


def test_a_repeating_timer_fires_at_2d_5d_8d_then_stops(settings, redis, jira, sendgrid, rules_file):
    rules_file.write_text(rules_file.read_text().replace("\nrules:\n", "\nrules:\n" + REPEATING.lstrip("\n"), 1))
    ctx = service_context(settings, redis, jira, sendgrid)
    try:
        t0 = int(time.time() * 1000) - 9 * 86400_000            # it entered the state nine days ago
        deliver(ctx, move(jira, KEY, "Waiting for feedback", ts_ms=t0), "d1")
        dues = []
        for _ in range(4):
            timer = ctx.timers.get("nag", KEY)
            if timer is None:
                break
            dues.append(round(timer.due - t0 / 1000))
            fire_due(ctx, timer.due)
    finally:
        process_context.use(None)
    assert dues == [2 * 86400, 5 * 86400, 8 * 86400]
    nags = [m for m in sent(sendgrid, "feedback_reminder") if "relance_effect" in m["custom_args"]
            and ":nag:" in m["custom_args"]["relance_effect"]]
    assert len(nags) == 3 and len({m["custom_args"]["relance_effect"] for m in nags}) == 3


def test_a_repeating_timer_stops_when_the_ticket_leaves_the_state(settings, redis, jira, sendgrid, rules_file):
    rules_file.write_text(rules_file.read_text().replace("\nrules:\n", "\nrules:\n" + REPEATING.lstrip("\n"), 1))
    ctx = service_context(settings, redis, jira, sendgrid)
    try:
        t0 = int(time.time() * 1000) - 9 * 86400_000
        deliver(ctx, move(jira, KEY, "Waiting for feedback", ts_ms=t0), "d1")
        fire_due(ctx, ctx.timers.get("nag", KEY).due)           # the first reminder, re-armed for 5d
        deliver(ctx, move(jira, KEY, "Open", ts_ms=t0 + 3 * 86400_000), "d2")
        assert ctx.timers.get("nag", KEY) is None
        fire_due(ctx, time.time())
    finally:
        process_context.use(None)
    assert len([m for m in sendgrid.messages if ":nag:" in m["custom_args"].get("relance_effect", "")]) == 1
