"""``relance simulate``: JIRA webhook bodies through the rules, on a virtual clock. Pure: no Redis,
no network, no clock of its own.

It shares the service's decision core (``decide``, ``next_firing``,
``no_longer_fits``): what it prints is what the service would decide. The clock
starts at the first event's timestamp; before each event, timers due by then
fire in due order; after the last one, timers keep firing until ``until``.
JIRA reads are answered from the events themselves (the ticket as the latest
event showed it), and a transition relance makes is applied to that ticket and
fed back as the event JIRA would send (by relance's own account), as in the
service.
"""

from __future__ import annotations

import heapq
import itertools
import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from .decisions import decide, next_firing, no_longer_fits, plan_effects
from .events import Person, TicketEvent, parse_event
from .lifecycle import TicketMemory
from .rules import Action, RuleSet

RELANCE = Person(account_id="relance", display_name="relance")     # the account relance acts as


@dataclass(frozen=True)
class Line:
    """One thing that happened, in virtual time."""

    at_ms: int
    ticket: str
    what: str               # delivery, transition, rule fired, rule skipped, timer armed, timer cancelled, ...
    rule: str | None = None
    detail: dict = field(default_factory=dict)

    def as_json(self, tz) -> dict:
        out = {"at": iso(self.at_ms, tz), "ticket": self.ticket, "what": self.what}
        if self.rule:
            out["rule"] = self.rule
        for k, v in self.detail.items():
            out[k] = iso(v, tz) if k == "due" else v
        return out


def iso(ms: int, tz) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).astimezone(tz).isoformat(timespec="seconds")


@dataclass
class _Ticket:
    """The ticket as the simulation knows it: the latest event's view, with relance's own changes."""

    view: TicketEvent
    memory: TicketMemory = field(default_factory=TicketMemory)


class Simulation:
    """Feed events with ``deliver``, advance time with ``run_until``; read ``lines``."""

    def __init__(self, rules: RuleSet):
        self.rules = rules
        self.lines: list[Line] = []
        self.tickets: dict[str, _Ticket] = {}
        self.timers: dict[tuple[str, str], tuple[int, int, int]] = {}     # (rule, key) -> (due, token, firing)
        self._queue: list[tuple[int, int, str, str]] = []                  # (due, token, rule, key)
        self._tokens = itertools.count(1)
        self.now_ms: int | None = None

    # -- time ---------------------------------------------------------------
    def run_until(self, until_ms: int) -> None:
        """Fire every timer due up to ``until_ms``, in due order."""
        while self._queue and self._queue[0][0] <= until_ms:
            due, token, rule, key = heapq.heappop(self._queue)
            if self.timers.get((rule, key), (None, None))[1] != token:
                continue                                      # cancelled or re-armed since
            self.now_ms = max(self.now_ms or due, due)
            self._fire(rule, key, due)
        self.now_ms = max(self.now_ms or until_ms, until_ms)

    # -- events -------------------------------------------------------------
    def deliver(self, body: dict) -> None:
        """One webhook body, as JIRA would post it."""
        event = parse_event(body)
        at = event.timestamp_ms or self.now_ms or 0
        if self.now_ms is None:
            self.now_ms = at
        self.run_until(at)
        self._apply(event, self.now_ms)

    def _apply(self, event: TicketEvent, now_ms: int, automation=frozenset()) -> None:
        key = event.issue_key
        if key is None:
            return
        ticket = self.tickets.setdefault(key, _Ticket(event))
        plan = decide(self.rules, event, ticket.memory, now_ms, automation)
        reading, t = plan.reading, plan.reading.transition
        self._say(now_ms, key, "delivery", webhook_event=event.webhook_event,
                  outcome=f"stale: {reading.note}" if reading.stale else (t.describe() if t else "no transition"))
        if not reading.stale:
            ticket.memory = plan.memory
            ticket.view = _merged(ticket.view, event)
        if t:
            self._say(now_ms, key, "transition", left=t.left, entered=t.entered, from_status=t.from_status,
                      to_status=t.to_status)
        for rule in plan.cancel:
            if self.timers.pop((rule, key), None):
                self._say(now_ms, key, "timer cancelled", rule)
        for arm in plan.arm:
            self._arm(arm.rule, key, arm.due_ms, 0, now_ms)
        for rule, why in plan.skipped:
            if t or reading.new_comment or event.is_creation:
                self._say(now_ms, key, "rule skipped", rule, why=why)
        by_rule: dict[str, list] = {}
        for e in plan.effects:
            by_rule.setdefault(e.rule, []).append(e.action)
        for rule, actions in by_rule.items():
            self._say(now_ms, key, "rule fired", rule)
            self._perform(rule, actions, key, now_ms)

    # -- timers ---------------------------------------------------------------
    def _arm(self, rule: str, key: str, due_ms: int, firing: int, now_ms: int) -> None:
        token = next(self._tokens)
        self.timers[(rule, key)] = (due_ms, token, firing)
        heapq.heappush(self._queue, (due_ms, token, rule, key))
        self._say(now_ms, key, "timer armed", rule, due=due_ms, **({"repeat": firing} if firing else {}))

    def _fire(self, rule_name: str, key: str, due_ms: int) -> None:
        _, _, firing = self.timers.pop((rule_name, key))
        rule = self.rules.rule(rule_name)
        ticket = self.tickets[key]
        current = replace(ticket.view, status=ticket.memory.status)
        why = no_longer_fits(self.rules, rule, current)
        if why:
            self._say(due_ms, key, "timer skipped", rule_name, why=why)
            return
        self._say(due_ms, key, "timer fired", rule_name, **({"repeat": firing} if firing else {}))
        self._perform(rule_name, [e.action for e in plan_effects(self.rules, rule_name)], key, due_ms)
        again = next_firing(self.rules, rule, due_ms, firing)
        if again is not None and (rule_name, key) not in self.timers:
            self._arm(rule_name, key, again, firing + 1, due_ms)

    # -- effects --------------------------------------------------------------
    def _perform(self, rule: str, actions: list[Action], key: str, now_ms: int) -> None:
        moved_to = None
        for action in actions:
            what, detail = describe(action)
            self._say(now_ms, key, what, rule, **detail)
            moved_to = self._reached(key, action.transition) if action.transition else moved_to
        # JIRA's webhook for relance's own transition arrives after the rule's actions.
        if moved_to:
            self._apply(self._moved_by_relance(key, moved_to, now_ms), now_ms,
                        automation=frozenset({RELANCE.account_id}))

    def _reached(self, key: str, target) -> str | None:
        """The status a transition action moves the ticket to, or None if it is there already."""
        status = self.tickets[key].memory.status or ""
        if isinstance(target, str):
            return target if status.casefold() != target.casefold() else None
        if self.rules.state_of(status) == target.to_state:
            return None
        return self.rules.statuses[target.to_state][0]      # JIRA picks the transition; say the first name

    def _moved_by_relance(self, key: str, status: str, now_ms: int) -> TicketEvent:
        view = self.tickets[key].view
        return replace(view, webhook_event="jira:issue_updated", event_type="issue_generic", timestamp_ms=now_ms,
                       status=status, status_change=(self.tickets[key].memory.status, status), actor=RELANCE,
                       comment=None)

    def _say(self, at_ms: int, ticket: str, what: str, rule: str | None = None, **detail) -> None:
        self.lines.append(Line(at_ms, ticket, what, rule, detail))


def _merged(known: TicketEvent, event: TicketEvent) -> TicketEvent:
    """The ticket as the newest event shows it, keeping what that event does not carry."""
    keep = {k: getattr(known, k) for k in ("summary", "priority", "project", "issue_type", "reporter", "assignee")
            if getattr(event, k) is None and getattr(known, k) is not None}
    if not event.labels and known.labels:
        keep["labels"] = known.labels
    return replace(event, **keep)


def describe(action: Action) -> tuple[str, dict]:
    """What an action would do: ("email", {...}) or ("jira", {...}) or ("notify", {...})."""
    kind, arg = action.kind, action.argument
    if kind == "email":
        return "email", {"template": arg.template, "to": list(arg.recipients),
                         **({"otherwise": list(arg.fallback)} if arg.fallback else {})}
    if kind == "notify":
        return "notify", {"template": arg.template, "url_env": arg.url_env}
    if kind == "comment":
        return "jira", {"action": "comment", **({"template": arg.template} if hasattr(arg, "template")
                                                   else {"body": arg})}
    if kind == "transition" and not isinstance(arg, str):
        return "jira", {"action": kind, "to_state": arg.to_state}
    return "jira", {"action": kind, "value": arg}


def simulate(rules: RuleSet, bodies, until_seconds: int) -> Simulation:
    """Run ``bodies`` (decoded webhook bodies, in delivery order), then ``until_seconds`` of quiet."""
    sim = Simulation(rules)
    for body in bodies:
        sim.deliver(body)
    if sim.now_ms is not None:
        sim.run_until(sim.now_ms + until_seconds * 1000)
    return sim


def render_text(sim: Simulation, tz, verbose: bool = False) -> str:
    """A readable timeline per ticket. Rules skipped because the event is not their trigger are
    left out unless ``verbose`` (the JSON output always has them)."""
    out = []
    for key in sorted({line.ticket for line in sim.lines}):
        out.append(key)
        for line in (x for x in sim.lines if x.ticket == key):
            if not verbose and line.what == "rule skipped" and str(line.detail.get("why", "")).startswith("wants "):
                continue
            data = line.as_json(tz)
            rest = {k: v for k, v in data.items() if k not in ("at", "ticket", "what", "rule")}
            words = " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
                             for k, v in rest.items())
            out.append(f"  {data['at']}  {line.what:<16} {line.rule or '':<22} {words}".rstrip())
    return "\n".join(out) + ("\n" if out else "")


def time_zone(rules: RuleSet):
    return ZoneInfo(rules.time_zone)
