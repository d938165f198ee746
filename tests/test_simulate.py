"""relance simulate: webhook bodies through the rules on a virtual clock, sharing the service's
decision core. Plus properties of that core over random histories (hypothesis)."""

from __future__ import annotations

import json
import subprocess
import sys

from hypothesis import given, settings, strategies as st

from workers.core.rules import load_rules, parse_rules
from workers.settings import PROJECT_ROOT
from workers.core.simulate import simulate
from tests.test_language import STATUSES as STATUS_MAP

RULES = load_rules(PROJECT_ROOT / "rules.yaml")
T0 = 1_795_000_000_000           # 2026-11-18T11:06:40Z
DAY = 86400_000


def body(status, moved_from=None, ts=T0, key="SUP-1", comment_by=None, comment_id=None, actor="acc-sam",
         webhook="jira:issue_updated"):
    b = {"timestamp": ts, "webhookEvent": webhook, "user": {"accountId": actor},
         "issue": {"id": "1", "key": key, "fields": {"status": {"name": status}, "project": {"key": "SUP"},
                                                     "reporter": {"accountId": "acc-jane"},
                                                     "priority": {"name": "Medium"}}}}
    if moved_from:
        b["changelog"] = {"items": [{"field": "status", "fromString": moved_from, "toString": status}]}
    if comment_by:
        b["comment"] = {"id": str(comment_id or ts), "body": "hi", "author": {"accountId": comment_by}}
    return b


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "relance", "simulate", *args], cwd=PROJECT_ROOT, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_a_resolved_ticket_is_closed_five_days_later_in_virtual_time(tmp_path):
    events = tmp_path / "events.json"
    events.write_text(json.dumps([body("Resolved", "In Progress")]))
    result = run(str(PROJECT_ROOT / "rules.yaml"), str(events), "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    armed = next(x for x in lines if x["what"] == "timer armed")
    assert (armed["rule"], armed["at"], armed["due"]) == ("auto-close", "2026-11-18T11:06:40+00:00",
                                                         "2026-11-23T11:06:40+00:00")
    fired = [x for x in lines if x["what"] in ("timer fired", "jira", "email")]
    assert [(x["what"], x.get("rule"), x["at"][:10]) for x in fired] == [
        ("email", "resolved-notice", "2026-11-18"), ("timer fired", "auto-close", "2026-11-23"),
        ("jira", "auto-close", "2026-11-23"), ("email", "auto-close", "2026-11-23")]
    assert all({"at", "ticket", "what"} <= set(x) for x in lines)


def test_a_reopen_before_the_timer_cancels_it_and_escalates():
    events = "\n".join(json.dumps(b) for b in [body("Resolved", "In Progress"),
                                                 body("Reopened", "Resolved", ts=T0 + DAY, actor="acc-jane")])
    result = run(str(PROJECT_ROOT / "rules.yaml"), "-", "--json", stdin=events)
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    whats = [(x["what"], x.get("rule")) for x in lines]
    assert ("timer cancelled", "auto-close") in whats and ("timer fired", "auto-close") not in whats
    assert ("rule fired", "escalate-reopened") in whats


def test_the_readable_timeline_and_its_errors(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(body("Waiting for feedback", "In Progress")) + "\n")
    result = run(str(PROJECT_ROOT / "rules.yaml"), str(events), "--until", "4d")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "SUP-1"
    assert "timer fired      feedback-reminder" in result.stdout and "template=feedback_reminder" in result.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(body("Open")) + "\n{not json\n")
    broken = run(str(PROJECT_ROOT / "rules.yaml"), str(bad))
    assert broken.returncode == 2 and f"{bad}:2: not JSON" in broken.stderr
    rules = tmp_path / "rules.yaml"
    rules.write_text("statuses: {open: [Open]}\nrules: [{name: x, when: {entered: limbo}, do: [{add_label: y}]}]\n")
    invalid = run(str(rules), str(events))
    assert invalid.returncode == 1 and f"{rules}:2:" in invalid.stderr


def test_a_repeating_reminder_stops_when_the_customer_answers():
    rules = parse_rules(RULES_WITH_REPEAT)
    sim = simulate(rules, [body("Waiting for feedback", "In Progress"),
                           body("Waiting for feedback", ts=T0 + 4 * DAY, comment_by="acc-jane", comment_id=5)],
                   30 * 86400)
    fired = [(x.what, x.rule, (x.at_ms - T0) // DAY) for x in sim.lines if x.what in ("timer fired", "jira")]
    # reminder at 2d; the customer's comment on day 4 moves the ticket back to Open (relance's transition),
    # which cancels the reminder due at 5d.
    assert fired == [("timer fired", "reminder", 2), ("jira", "customer-answered", 4)]
    assert ("timer cancelled", "reminder") in [(x.what, x.rule) for x in sim.lines]


RULES_WITH_REPEAT = STATUS_MAP + """
rules:
  - name: customer-answered
    when: {commented: customer}
    if: {state: waiting_for_feedback}
    do: [{transition: Open}]
  - name: reminder
    when: {entered: waiting_for_feedback}
    after: 2d
    repeat: {every: 3d, times: 2}
    do: [{email: {to: reporter, template: feedback_reminder}}]
  - name: auto-close
    when: {entered: resolved}
    after: 5d
    do: [{transition: Closed}]
"""

STATUSES = ["Open", "Waiting for feedback", "Resolved", "Reopened", "Closed"]
STEP = st.tuples(st.sampled_from(["move", "comment", "wait"]), st.sampled_from(STATUSES),
                 st.sampled_from(["acc-jane", "acc-sam"]), st.integers(0, 9 * DAY))


@settings(max_examples=150, deadline=None)
@given(st.lists(STEP, max_size=25))
def test_properties_of_timers_over_random_histories(steps):
    """One live timer per ticket and rule; none fires after its ticket left the state; repeats
    never exceed ``times``."""
    rules = parse_rules(RULES_WITH_REPEAT)
    bodies, status, now, comment = [body("Open", webhook="jira:issue_created")], "Open", T0, 100
    for kind, target, who, gap in steps:
        now += gap
        if kind == "move" and target != status:
            bodies.append(body(target, status, ts=now, actor=who))
            status = target
        elif kind == "comment":
            comment += 1
            bodies.append(body(status, ts=now, comment_by=who, comment_id=comment, actor=who))
    sim = simulate(rules, bodies, 30 * 86400)
    live: set = set()                  # (rule, ticket) with a pending timer
    state = {}
    def pending_timers_fit():
        for rule_name, ticket in live:
            rule = rules.rule(rule_name)
            assert rule.when.kind != "entered" or state.get(ticket) in rule.when.states, \
                f"{rule_name} still pending on {ticket} after it left {rule.when.states}"

    for line in sim.lines:
        timer = (line.rule, line.ticket)
        if line.what == "delivery":
            pending_timers_fit()       # the previous delivery's cancels are all written by now
        elif line.what == "transition":
            state[line.ticket] = line.detail["entered"]
        elif line.what == "timer armed":
            live.add(timer)            # arming again replaces: still one
        elif line.what == "timer cancelled":
            assert timer in live, f"cancelled a timer that was not pending: {line}"
            live.discard(timer)
        elif line.what in ("timer fired", "timer skipped"):
            assert timer in live, f"a timer fired twice, or after it was cancelled: {line}"
            live.discard(timer)
            rule = rules.rule(line.rule)
            if line.what == "timer fired":
                assert state.get(line.ticket) in rule.when.states, f"fired after the state was left: {line}"
                assert line.detail.get("repeat", 0) <= (rule.repeat.times if rule.repeat else 0)
    pending_timers_fit()
    assert live == set(sim.timers)
