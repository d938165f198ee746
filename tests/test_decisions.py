"""Event -> lifecycle transition -> rule decisions: pure, no Redis, no HTTP."""

import pytest

from tests.conftest import payload
from workers.core.decisions import decide
from workers.core.events import parse_event
from workers.core.lifecycle import TicketMemory
from workers.core.rules import load_rules
from workers.settings import PROJECT_ROOT

RULES = load_rules(PROJECT_ROOT / "rules.yaml")
T0 = 1_700_000_000_000


def moved(from_status, to_status, ts=T0, comment=None):
    body = payload("02")
    body["timestamp"] = ts
    item = body["changelog"]["items"][0]
    item["fromString"], item["toString"] = from_status, to_status
    body["issue"]["fields"]["status"]["name"] = to_status
    if comment:
        body["comment"] = {"id": "1", "body": comment, "author": {"name": "support"}}
    return parse_event(body)


def test_entering_waiting_for_feedback_emails_the_reporter():
    plan = decide(RULES, moved("In Progress", "Waiting for feedback"), TicketMemory(), T0)
    assert plan.reading.transition.describe() == "left open, entered waiting_for_feedback"
    assert [(e.rule, e.action.kind) for e in plan.effects] == [("feedback-request", "email")]
    assert [a.rule for a in plan.arm] == ["feedback-reminder"] and plan.cancel == ("support-silence",)


def test_entering_resolved_arms_the_auto_close_timer_from_the_event_time():
    plan = decide(RULES, moved("In Progress", "Resolved", ts=T0), TicketMemory(), T0 + 60_000)
    assert [(a.rule, a.due_ms) for a in plan.arm] == [("auto-close", T0 + 5 * 86400 * 1000)]
    assert [e.rule for e in plan.effects] == ["resolved-notice"]


def test_leaving_resolved_cancels_the_timer():
    plan = decide(RULES, moved("Resolved", "Reopened"), TicketMemory("Resolved", "resolved", T0 - 1), T0)
    assert plan.cancel == ("auto-close",)
    assert [(e.rule, e.action.kind) for e in plan.effects] == [
        ("escalate-reopened", "raise_priority"), ("escalate-reopened", "add_label"), ("escalate-reopened", "email")]


def test_a_late_resolved_after_a_reopen_changes_nothing():
    memory = TicketMemory("Reopened", "reopened", T0 + 10_000)
    plan = decide(RULES, moved("In Progress", "Resolved", ts=T0), memory, T0 + 20_000)
    assert plan.reading.stale
    assert plan.arm == () and plan.effects == () and plan.cancel == ()
    assert plan.memory == memory


def test_moves_inside_one_state_are_no_transition():
    plan = decide(RULES, moved("Open", "In Progress"), TicketMemory("Open", "open", T0 - 1), T0)
    assert plan.reading.transition is None and plan.effects == ()
    assert plan.memory.status == "In Progress"


def test_french_status_names_map_to_the_same_states():
    plan = decide(RULES, moved("En cours", "En attente de feedback"), TicketMemory(), T0)
    assert [e.rule for e in plan.effects] == ["feedback-request"]


def test_unmapped_statuses_leave_and_enter_nothing_known():
    plan = decide(RULES, parse_event(payload("01")), TicketMemory(), T0)   # In Progress -> Done
    assert plan.reading.transition.describe() == "left open"
    assert plan.effects == () and plan.arm == ()


def test_a_missed_change_is_inferred_from_the_status_an_event_shows():
    body = payload("05")                      # comment event, no changelog, status "To Do"
    body["issue"]["fields"]["status"]["name"] = "Reopened"
    plan = decide(RULES, parse_event(body), TicketMemory("Resolved", "resolved", 1), T0)
    t = plan.reading.transition
    assert (t.left, t.entered, t.inferred) == ("resolved", "reopened", True)
    assert plan.cancel == ("auto-close",)


def test_nothing_is_inferred_for_a_ticket_never_seen():
    body = payload("05")
    body["issue"]["fields"]["status"]["name"] = "Reopened"
    assert decide(RULES, parse_event(body), TicketMemory(), T0).reading.transition is None


def test_a_created_ticket_enters_its_first_state_and_is_acknowledged():
    body = payload("13")
    body["issue"]["fields"]["status"]["name"] = "Open"
    plan = decide(RULES, parse_event(body), TicketMemory(), T0)
    assert plan.reading.transition.describe() == "entered open"
    assert [e.rule for e in plan.effects] == ["acknowledge"]


def test_a_created_ticket_with_an_unmapped_status_is_still_acknowledged():
    plan = decide(RULES, parse_event(payload("13")), TicketMemory(), T0)     # status "To Do"
    assert plan.reading.transition is None
    assert [e.rule for e in plan.effects] == ["acknowledge"]


def test_leaving_waiting_for_feedback_cancels_the_reminder():
    memory = TicketMemory("Waiting for feedback", "waiting_for_feedback", T0 - 1, T0 - 1)
    assert decide(RULES, moved("Waiting for feedback", "Open"), memory, T0).cancel == ("feedback-reminder",)


def test_skipped_rules_say_why():
    plan = decide(RULES, moved("In Progress", "Waiting for feedback"), TicketMemory(), T0)
    assert dict(plan.skipped)["auto-close"] == "wants entered resolved; ticket left open, entered waiting_for_feedback by customer"


@pytest.mark.parametrize("prefix", ["01", "03", "04", "05", "06", "07", "08", "10", "11", "12", "13"])
def test_every_real_payload_decides_without_error(prefix):
    decide(RULES, parse_event(payload(prefix)), TicketMemory(), T0)


def test_a_missed_event_still_cancels_the_timer_of_the_state_the_ticket_was_in():
    memory = TicketMemory("Waiting for feedback", "waiting_for_feedback", T0 - 2, T0 - 2)
    plan = decide(RULES, moved("Open", "Resolved"), memory, T0)     # the move to Open was never delivered
    assert set(plan.cancel) == {"feedback-reminder", "support-silence"}
    assert [a.rule for a in plan.arm] == ["auto-close"]


def test_a_deleted_ticket_cancels_its_timers_and_acts_no_more():
    body = payload("02")
    body["webhookEvent"] = "jira:issue_deleted"
    del body["changelog"]
    plan = decide(RULES, parse_event(body), TicketMemory("Resolved", "resolved", 1, 1), T0)
    assert set(plan.cancel) == {"feedback-reminder", "auto-close", "support-silence"}
    assert plan.effects == () and plan.arm == ()
