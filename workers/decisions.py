"""Lifecycle transitions -> rule decisions. Pure: no I/O.

A decision is what must happen because of one event: effects to perform now,
timers to arm, timers to cancel, and for each rule that did not fire, why.
"""

from __future__ import annotations

from dataclasses import dataclass

from .events import TicketEvent
from .lifecycle import Reading, TicketMemory, read_event
from .rules import Action, RuleSet


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


def decide(rules: RuleSet, event: TicketEvent, memory: TicketMemory, now_ms: int) -> Plan:
    """What the rules make of ``event`` for a ticket last known as ``memory``."""
    reading = read_event(rules, event, memory, now_ms)
    t = reading.transition
    if event.webhook_event == "jira:issue_deleted" and not reading.stale:
        timed = tuple(r.name for r in rules.rules if r.after is not None)
        return Plan(reading, cancel=timed, skipped=tuple((r.name, "ticket deleted") for r in rules.rules))
    if reading.stale or (t is None and not event.is_creation):
        why = reading.note or "no lifecycle transition"
        return Plan(reading, skipped=tuple((r.name, why) for r in rules.rules))

    effects, arm, cancel, skipped = [], [], [], []
    ts = reading.memory.ts_ms or now_ms          # the event's time, unless it was not believed
    happened = "ticket created" if t is None else f"ticket {t.describe()}"
    for rule in rules.rules:
        state, kind = rule.when.state, rule.when.kind
        # A timer is cancelled when the ticket leaves its state, even if we missed the event that said so.
        if t and rule.after is not None and kind == "entered" and t.entered != state \
                and state in (t.left, memory.state):
            cancel.append(rule.name)
        if kind == "created":
            fires = event.is_creation
        else:
            fires = t is not None and ((kind == "entered" and t.entered == state) or (kind == "left" and t.left == state))
        if not fires:
            skipped.append((rule.name, f"wants {'creation' if kind == 'created' else f'{kind} {state}'}; {happened}"))
        elif not rule.enabled:
            skipped.append((rule.name, "disabled"))
        elif rule.after is not None:
            arm.append(TimerArm(rule.name, ts + rule.after * 1000))
        else:
            effects.extend(PlannedEffect(rule.name, i, a) for i, a in enumerate(rule.do))
    return Plan(reading, tuple(effects), tuple(arm), tuple(cancel), tuple(skipped))
