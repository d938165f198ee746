"""The rules language, pure: triggers (created, entered, left, commented) and by whom, if: conditions,
cancel_on, repeats. No Redis, no HTTP."""

from __future__ import annotations

import pytest

from workers.core.decisions import decide, next_firing
from workers.core.events import parse_event
from workers.exceptions import RulesError
from workers.core.lifecycle import TicketMemory
from workers.core.people import AUTOMATION, CUSTOMER, SUPPORT, role_of
from workers.core.events import Person
from workers.core.rules import parse_rules

T0 = 1_800_000_000_000
STATUSES = """
statuses:
  open: [Open, In Progress]
  waiting_for_feedback: [Waiting for feedback]
  resolved: [Resolved]
  reopened: [Reopened]
  closed: [Closed]
customers: ["@customer.example"]
"""
RULES = parse_rules(STATUSES + """
rules:
  - name: customer-answered
    when: {commented: customer}
    if: {state: waiting_for_feedback}
    do: [{transition: Open}]
  - name: customer-replied
    when: {commented: customer}
    if: {state: resolved}
    do: [{add_label: customer-replied}]
  - name: support-silence
    when: {entered: [open, reopened]}
    after: 1d
    cancel_on: {commented: support}
    do: [{email: {to: assignee, otherwise: leads@acme.example, template: escalation}}]
  - name: escalate-by-customer
    when: {entered: reopened, by: customer}
    if: {project: [SUP], priority: [High, Highest], lacks_label: no-escalation}
    do: [{raise_priority: 1}]
  - name: reminder
    when: {entered: waiting_for_feedback}
    after: 2d
    repeat: {every: 3d, times: 2}
    do: [{email: {to: reporter, template: feedback_reminder}}]
""")
JANE = {"accountId": "acc-jane", "displayName": "Jane"}
SAM = {"accountId": "acc-sam", "displayName": "Sam"}


def event(webhook="jira:issue_updated", status="Open", moved_from=None, comment_by=None, comment_id="100",
          actor=JANE, ts=T0, priority="High", labels=(), project="SUP", event_type=None):
    body = {"timestamp": ts, "webhookEvent": webhook, "user": actor,
            "issue": {"id": "1", "key": "SUP-1", "fields": {
                "status": {"name": status}, "priority": {"name": priority}, "labels": list(labels),
                "project": {"key": project}, "issuetype": {"name": "Bug"}, "reporter": JANE}}}
    if event_type:
        body["issue_event_type_name"] = event_type
    if moved_from:
        body["changelog"] = {"items": [{"field": "status", "fromString": moved_from, "toString": status}]}
    if comment_by:
        body["comment"] = {"id": comment_id, "body": "hello", "author": comment_by}
    return parse_event(body)


def memory(status, state, ts=T0 - 1000, last_comment=None):
    return TicketMemory(status=status, state=state, ts_ms=ts, since_ms=ts, last_comment=last_comment)


def fired(plan):
    return sorted({e.rule for e in plan.effects} | {a.rule for a in plan.arm})


# -- who: customer, support, automation -------------------------------------------

@pytest.mark.parametrize("person, role", [
    (Person(account_id="acc-jane"), CUSTOMER),                                   # the reporter
    (Person(account_id="x", account_type="customer"), CUSTOMER),                 # a JSM customer
    (Person(account_id="y", email="Bob@Customer.example"), CUSTOMER),           # a customers: domain
    (Person(account_id="acc-sam", email="sam@acme.example"), SUPPORT),
    (Person(account_id="557058:automation", account_type="app"), AUTOMATION),    # Automation for Jira
    (Person(account_id="relance-bot"), AUTOMATION),                              # relance itself
])
def test_who_is_the_customer_support_or_automation(person, role):
    assert role_of(person, Person(account_id="acc-jane"), ("@customer.example",), {"relance-bot"}) == role


# -- commented ----------------------------------------------------------------------

def test_a_customer_comment_on_a_ticket_waiting_for_feedback_moves_it_back():
    plan = decide(RULES, event("comment_created", "Waiting for feedback", comment_by=JANE),
                  memory("Waiting for feedback", "waiting_for_feedback"), T0)
    assert [(e.rule, e.action.kind) for e in plan.effects] == [("customer-answered", "transition")]


def test_a_support_comment_on_a_ticket_waiting_for_feedback_changes_nothing():
    plan = decide(RULES, event("comment_created", "Waiting for feedback", comment_by=SAM, actor=SAM),
                  memory("Waiting for feedback", "waiting_for_feedback"), T0)
    assert plan.effects == ()
    assert dict(plan.skipped)["customer-answered"] == "wants a comment by customer; a comment by support"


def test_a_customer_comment_on_a_resolved_ticket_is_flagged_not_reopened():
    plan = decide(RULES, event("comment_created", "Resolved", comment_by=JANE),
                  memory("Resolved", "resolved"), T0)
    assert [(e.rule, e.action.kind) for e in plan.effects] == [("customer-replied", "add_label")]
    assert dict(plan.skipped)["customer-answered"] == "if: state is resolved, not waiting_for_feedback"


def test_the_same_comment_sent_twice_by_jira_counts_once():
    mem = memory("Waiting for feedback", "waiting_for_feedback")
    first = decide(RULES, event("jira:issue_updated", "Waiting for feedback", comment_by=JANE,
                                event_type="issue_commented"), mem, T0)
    again = decide(RULES, event("comment_created", "Waiting for feedback", comment_by=JANE, ts=T0 + 5),
                   first.memory, T0)
    assert fired(first) == ["customer-answered"] and again.effects == ()


def test_an_edited_comment_is_not_a_new_comment():
    plan = decide(RULES, event("comment_updated", "Waiting for feedback", comment_by=JANE),
                  memory("Waiting for feedback", "waiting_for_feedback"), T0)
    assert plan.effects == ()


def test_relance_s_own_comment_is_nobody_s_answer():
    bot = {"accountId": "relance-bot"}
    plan = decide(RULES, event("comment_created", "Open", comment_by=bot, actor=bot), memory("Open", "open"), T0,
                  automation=frozenset({"relance-bot"}))
    assert "support-silence" not in plan.cancel


# -- entered/left with several states, by whom, if: ------------------------------

def test_a_timer_on_several_states_is_armed_on_each_and_cancelled_by_support_s_comment():
    plan = decide(RULES, event(status="Reopened", moved_from="Resolved"), memory("Resolved", "resolved"), T0)
    assert [a.rule for a in plan.arm] == ["support-silence"]
    answered = decide(RULES, event("comment_created", "Reopened", comment_by=SAM, actor=SAM, ts=T0 + 10),
                      plan.memory, T0)
    assert answered.cancel == ("support-silence",)


def test_moving_between_two_of_a_timer_s_states_keeps_one_timer():
    plan = decide(RULES, event(status="Open", moved_from="Reopened"), memory("Reopened", "reopened"), T0)
    assert [a.rule for a in plan.arm] == ["support-silence"] and "support-silence" not in plan.cancel


def test_by_customer_and_conditions_all_must_hold():
    reopened = dict(status="Reopened", moved_from="Resolved")
    assert "escalate-by-customer" in fired(decide(RULES, event(**reopened), memory("Resolved", "resolved"), T0))
    by_support = decide(RULES, event(**reopened, actor=SAM), memory("Resolved", "resolved"), T0)
    assert "escalate-by-customer" not in fired(by_support)
    low = decide(RULES, event(**reopened, priority="Low"), memory("Resolved", "resolved"), T0)
    assert dict(low.skipped)["escalate-by-customer"] == "if: priority is Low, not High or Highest"
    labelled = decide(RULES, event(**reopened, labels=["no-escalation"]), memory("Resolved", "resolved"), T0)
    assert dict(labelled.skipped)["escalate-by-customer"] == "if: has label no-escalation"
    other = decide(RULES, event(**reopened, project="OPS"), memory("Resolved", "resolved"), T0)
    assert dict(other.skipped)["escalate-by-customer"] == "if: project is OPS, not SUP"


# -- repeat ----------------------------------------------------------------------------

def test_a_repeat_fires_at_2d_5d_8d_and_no_more():
    rule = RULES.rule("reminder")
    plan = decide(RULES, event(status="Waiting for feedback", moved_from="Open"), memory("Open", "open"), T0)
    [arm] = plan.arm
    day = 86400_000
    assert arm.due_ms == T0 + 2 * day
    second = next_firing(RULES, rule, arm.due_ms, 0)
    third = next_firing(RULES, rule, second, 1)
    assert (second, third) == (T0 + 5 * day, T0 + 8 * day)
    assert next_firing(RULES, rule, third, 2) is None


# -- the file ------------------------------------------------------------------------

@pytest.mark.parametrize("rule, problem", [
    ("when: {commented: customer, by: support}", "'commented' already says by whom"),
    ("when: {commented: everyone}", "Input should be 'customer', 'support' or 'anyone'"),
    ("when: {entered: [open, limbo]}", "state 'limbo' is not defined under 'statuses'"),
    ("when: {entered: open}\n    repeat: {every: 1d, times: 2}", "'repeat' needs 'after'"),
    ("when: {entered: open}\n    after: 1d\n    calendar: paris", "no calendar 'paris' under 'calendars'"),
    ("when: {entered: open}\n    if: {state: limbo}", "state 'limbo' is not defined under 'statuses'"),
    ("when: {entered: open}\n    if: {colour: red}", "unknown key 'colour'"),

])
def test_mistakes_in_the_language_are_named_with_their_line(rule, problem):
    text = STATUSES + f"rules:\n  - name: r\n    {rule}\n    do: [{{add_label: x}}]\n"
    with pytest.raises(RulesError) as e:
        parse_rules(text)
    assert any(problem in p for p in e.value.problems), e.value.problems
    assert all(p.split(":")[0].isdigit() and int(p.split(":")[0]) >= 10 for p in e.value.problems)


def test_notify_takes_a_url_from_the_environment_never_from_the_file():
    text = STATUSES + "rules:\n  - name: r\n    when: {entered: open}\n    do:\n" \
                      "      - notify: {url: 'https://hooks.slack.com/x', template: escalation_chat}\n"
    with pytest.raises(RulesError) as e:
        parse_rules(text)
    assert "unknown key 'url'" in " ".join(e.value.problems)
    with pytest.raises(RulesError) as e:
        parse_rules(text.replace("url: 'https://hooks.slack.com/x'", "url_env: 'https://hooks.slack.com/x'"))
    assert "is not an environment variable name" in " ".join(e.value.problems)


# -- working time ----------------------------------------------------------------------

CALENDAR_RULES = parse_rules(STATUSES + """
calendars:
  paris:
    time_zone: Europe/Paris
    hours: {mon-fri: "09:00-18:00"}
    holidays: ["2026-12-25"]
rules:
  - name: silence
    when: {entered: open}
    after: 1d
    calendar: paris
    do: [{add_label: silent}]
  - name: nudge
    when: {entered: waiting_for_feedback}
    after: 2h
    repeat: {every: 1d, times: 1}
    calendar: paris
    do: [{add_label: nudged}]
""")


def paris_ms(text):
    from datetime import datetime
    from zoneinfo import ZoneInfo
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("Europe/Paris")).timestamp() * 1000)


def test_a_working_day_is_the_same_time_next_working_day_across_a_holiday():
    thursday = paris_ms("2026-12-24T17:00")
    plan = decide(CALENDAR_RULES, event(status="Open", moved_from="Reopened", ts=thursday),
                  memory("Reopened", "reopened", ts=thursday - 1000), thursday)
    assert [(a.rule, a.due_ms) for a in plan.arm] == [("silence", paris_ms("2026-12-28T17:00"))]


def test_working_hours_skip_the_weekend_and_repeats_count_working_time_too():
    friday = paris_ms("2026-11-27T17:00")
    plan = decide(CALENDAR_RULES, event(status="Waiting for feedback", moved_from="Open", ts=friday),
                  memory("Open", "open", ts=friday - 1000), friday)
    [arm] = plan.arm
    assert arm.due_ms == paris_ms("2026-11-30T10:00")                 # Friday 17:00 + 2h = Monday 10:00
    assert next_firing(CALENDAR_RULES, CALENDAR_RULES.rule("nudge"), arm.due_ms, 0) == paris_ms("2026-12-01T10:00")
