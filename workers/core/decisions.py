"""Lifecycle transitions -> rule decisions. Pure: no I/O.

A decision is what must happen because of one event: effects to perform now,
timers to arm, timers to cancel, and for each rule that did not fire, why.
"""

from __future__ import annotations

from dataclasses import dataclass

from datetime import datetime, timezone

from .events import TicketEvent
from .lifecycle import Reading, TicketMemory, read_event
from .mail_events import UNDELIVERED
from .people import fits, role_of
from .rules import Action, Rule, RuleSet, Trigger


@dataclass(frozen=True)
class PlannedEffect:
    rule: str
    index: int          # position of the action in the rule's ``do`` list
    action: Action


@dataclass(frozen=True)
class TimerArm:
    rule: str
    due_ms: int


@dataclass(frozen=True)
class Plan:
    reading: Reading
    effects: tuple[PlannedEffect, ...] = ()
    arm: tuple[TimerArm, ...] = ()
    cancel: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()   # (rule, why it did not fire)

    @property
    def memory(self) -> TicketMemory:
        return self.reading.memory


def plan_effects(rules: RuleSet, rule_name: str) -> tuple[PlannedEffect, ...]:
    """All actions of a rule, in order (what a due timer performs)."""
    rule = rules.rule(rule_name)
    return tuple(PlannedEffect(rule.name, i, a) for i, a in enumerate(rule.do)) if rule else ()


def due_after(rules: RuleSet, rule: Rule, start_ms: int, span) -> int:
    """When ``span`` (a rule's Duration) after ``start_ms`` is: in the rule's calendar's working
    time if it has one (``1d`` there is the same time next working day), else wall-clock."""
    calendar = rules.calendar(rule.calendar) if rule.calendar else None
    if calendar is None:
        return start_ms + int(span) * 1000
    start = datetime.fromtimestamp(start_ms / 1000, timezone.utc)
    return round(calendar.add_duration(start, getattr(span, "text", int(span))).timestamp() * 1000)


def next_firing(rules: RuleSet, rule: Rule, fired_due_ms: int, firing: int) -> int | None:
    """When a repeating rule fires again after its ``firing``-th firing (0 = the first), or None."""
    if rule.repeat is None or firing >= rule.repeat.times:
        return None
    return due_after(rules, rule, fired_due_ms, rule.repeat.every)


def view_of(rules: RuleSet, ticket) -> dict:
    """What conditions read of a ticket: a TicketEvent (the payload) or a Ticket (as JIRA shows it)."""
    return {"state": rules.state_of(ticket.status), "project": ticket.project, "issue_type": ticket.issue_type,
            "priority": ticket.priority, "labels": ticket.labels}


def conditions_fail(rules: RuleSet, rule: Rule, ticket) -> str | None:
    """Why ``rule``'s ``if:`` does not hold for ``ticket`` now, or None if it holds (or has none)."""
    if rule.conditions is None:
        return None
    return rule.conditions.failing(**view_of(rules, ticket))


def no_longer_fits(rules: RuleSet, rule: Rule, ticket, automation: frozenset = frozenset(),
                   customer_accounts: frozenset = frozenset()) -> str | None:
    """Why ``ticket`` (as JIRA shows it when acting or firing) no longer fits ``rule``: its trigger's
    state was left (or, for ``left``, entered again), the comment that triggered it is not JIRA's or
    not by whom the rule wants, or its ``if:`` fails. None if it fits."""
    state = rules.state_of(ticket.status)
    states = rule.when.states
    event = getattr(ticket, "event", None)
    if rule.when.kind == "commented" and event is not None:
        if event.comment is None:
            return "JIRA does not show the comment"
        role = "customer" if event.comment.via_email else role_of(
            event.comment.author, ticket.reporter, rules.customer_domains, automation, customer_accounts)
        if not fits(role, rule.when.who, comment=True):
            return f"JIRA shows the comment is by {role}, not {rule.when.who}"
    if rule.when.kind == "entered" and state not in states:
        return f"the ticket is now {ticket.status!r} ({state or 'unmapped'}), no longer {' or '.join(states)}"
    if rule.when.kind == "left" and state in states:
        return f"the ticket is back in {state} ({ticket.status!r})"
    why = conditions_fail(rules, rule, ticket)
    return f"if: {why}" if why else None


def _matches(trigger: Trigger, event: TicketEvent, reading: Reading, actor_role, author_role) -> bool:
    t = reading.transition
    kind = trigger.kind
    if kind == "created":
        return event.is_creation and fits(actor_role, trigger.who)
    if kind == "commented":
        return reading.new_comment and fits(author_role, trigger.who, comment=True)
    if kind == "email":
        return False                # SendGrid's events, not JIRA's: see decide_mail_event
    if t is None:
        return False
    state = t.entered if kind == "entered" else t.left
    return state in trigger.states and fits(actor_role, trigger.who)


def decide(rules: RuleSet, event: TicketEvent, memory: TicketMemory, now_ms: int,
           automation: frozenset = frozenset(), customer_accounts: frozenset = frozenset()) -> Plan:
    """What the rules make of ``event`` for a ticket last known as ``memory``.

    ``automation``: the JIRA accounts whose doings are automation's (relance's own);
    ``customer_accounts``: the members of the rules file's customer groups.
    """
    reading = read_event(rules, event, memory, now_ms)
    t = reading.transition
    if event.webhook_event == "jira:issue_deleted" and not reading.stale:
        timed = tuple(r.name for r in rules.rules if r.timed)
        return Plan(reading, cancel=timed, skipped=tuple((r.name, "ticket deleted") for r in rules.rules))
    if reading.stale or (t is None and not event.is_creation and not reading.new_comment):
        why = reading.note or "no lifecycle transition"
        return Plan(reading, skipped=tuple((r.name, why) for r in rules.rules))

    reporter = event.reporter or memory.reporter      # Cloud's comment events do not name the reporter
    def role(person):
        return role_of(person, reporter, rules.customer_domains, automation, customer_accounts)

    actor_role = role(event.actor)
    author_role = "customer" if event.comment and event.comment.via_email else role(
        event.comment.author if event.comment else None)
    effects, arm, cancel, skipped = [], [], [], []
    ts = reading.memory.ts_ms or now_ms          # the event's time, unless it was not believed
    happened = _happened(event, reading, actor_role, author_role)
    for rule in rules.rules:
        states = rule.when.states
        # A timer is cancelled when the ticket leaves its state, even if we missed the event that said so,
        # and when its cancel_on event happens.
        if rule.timed and ((t and rule.when.kind == "entered" and t.entered not in states
                            and (t.left in states or memory.state in states))
                           or (rule.cancel_on and _matches(rule.cancel_on, event, reading, actor_role, author_role))):
            cancel.append(rule.name)
        if not _matches(rule.when, event, reading, actor_role, author_role):
            skipped.append((rule.name, f"wants {rule.when.describe()}; {happened}"))
        elif not rule.enabled:
            skipped.append((rule.name, "disabled"))
        elif rule.timed:
            if rule.name in cancel:
                cancel.remove(rule.name)          # re-armed below: the arm replaces the pending timer
            arm.append(TimerArm(rule.name, due_after(rules, rule, ts, rule.after)))
        elif (why := conditions_fail(rules, rule, event)) is not None:
            skipped.append((rule.name, f"if: {why}"))
        else:
            effects.extend(PlannedEffect(rule.name, i, a) for i, a in enumerate(rule.do))
    return Plan(reading, tuple(effects), tuple(arm), tuple(cancel), tuple(skipped))


def decide_mail_event(rules: RuleSet, kind: str, audience: str, ticket_view: dict | None
                      ) -> tuple[list[str], list[tuple[str, str]]]:
    """Which rules an email event fires: ``kind`` is the event (bounced, blocked, dropped, delivered,
    deferred, spamreport), ``audience`` whom the email was for (customer, support), ``ticket_view`` what
    ``if:`` conditions read of the ticket now (``view_of``), None when the ticket cannot be seen.

    Returns (the rules to perform, in file order; [(rule, why not)] for the ``email`` rules that do not
    fire). ``email: bounced`` takes a customer's email that bounced, was blocked or dropped.
    """
    fire, skipped = [], []
    for rule in rules.rules:
        if rule.when.kind != "email":
            continue
        if kind not in UNDELIVERED:
            continue                # delivered, deferred: no rule listens; not worth a line each
        if audience != "customer":
            skipped.append((rule.name, f"the email was for {audience}, not the customer"))
        elif not rule.enabled:
            skipped.append((rule.name, "disabled"))
        elif ticket_view is None:
            skipped.append((rule.name, "JIRA does not show the ticket (deleted, moved, or never existed)"))
        elif rule.conditions is not None and (why := rule.conditions.failing(**ticket_view)) is not None:
            skipped.append((rule.name, f"if: {why}"))
        else:
            fire.append(rule.name)
    return fire, skipped


def _happened(event: TicketEvent, reading: Reading, actor_role, author_role) -> str:
    parts = []
    if event.is_creation:
        parts.append("ticket created")
    if reading.transition:
        parts.append(f"ticket {reading.transition.describe()}" + (f" by {actor_role}" if actor_role else ""))
    if reading.new_comment:
        parts.append(f"a comment by {author_role or 'someone unknown'}")
    return ", ".join(parts) or "nothing the rules read"
