"""RQ jobs. Plain functions imported by name; they take ids and re-read state from Redis.

Exceptions are never swallowed: RQ must see a failure to retry the job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

from .actions import Ticket
from .context import current
from .decisions import decide, plan_effects
from .events import parse_event
from .exceptions import JiraError, PayloadError
from .timers import split_member

log = logging.getLogger("relance.jobs")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _plan_key(delivery_id: str) -> str:
    return f"relance:delivery:{delivery_id}:plan"


def generation_of(delivery_id: str) -> str:
    """A short, stable timer generation for timers armed by one delivery."""
    return hashlib.sha1(delivery_id.encode()).hexdigest()[:12]


def process_delivery(delivery_id: str) -> str:
    """Apply one accepted webhook delivery: decide, record the decision, then perform its effects.

    Idempotent: the decision is stored before any effect, so a retry (after a
    crash or a transient failure) performs the same decision, and the ledger
    skips effects already done. Returns a short outcome for RQ's result.
    """
    ctx = current()
    if ctx.deliveries.is_done(delivery_id):
        return "already processed"
    raw = ctx.deliveries.body(delivery_id)
    if raw is None:
        log.warning("delivery %s: body expired before processing", delivery_id)
        return "expired"
    try:
        event = parse_event(json.loads(raw))
    except (PayloadError, ValueError) as e:
        ctx.deliveries.mark_done(delivery_id, f"ignored: {e}")
        return f"ignored: {e}"
    key = event.issue_key
    if key is None and event.issue_id and not ctx.effects.jira.dry_run:
        # Server's comment_created may carry only the comment; its link names the issue id.
        key = (_fresh_issue(ctx, event.issue_id) or {}).get("key")
    if key is None:
        ctx.deliveries.mark_done(delivery_id, "ignored: no ticket key in the payload")
        return "ignored: no ticket key"

    with ctx.tickets.lock(key):
        stored = ctx.redis.get(_plan_key(delivery_id))
        if stored is None:
            stored = _decide_and_record(ctx, delivery_id, key, event)
        plan = json.loads(stored)
        ticket = Ticket.from_snapshot({**event.snapshot(), "key": key}, event=event,
                                      since_ms=ctx.tickets.memory(key).since_ms or event.timestamp_ms,
                                      times_reopened=ctx.tickets.entries(key, "reopened"))
        if plan["effects"] and not ticket.comments:
            # Cloud payloads carry no comments; the question and the customer's words need them.
            ticket = ticket.refreshed(_fresh_issue(ctx, key))
        for rule_name, indexes in plan["effects"].items():
            rule = ctx.rules.rule(rule_name)
            if rule is None:
                ctx.audit.record(key, "rule gone", rule=rule_name, delivery=delivery_id)
                continue
            ctx.effects.perform_rule(rule_name, [(i, rule.do[i]) for i in indexes], ticket, delivery_id)
        ctx.deliveries.mark_done(delivery_id, plan["summary"])
    return plan["summary"]


def _fresh_issue(ctx, key: str) -> dict | None:
    try:
        return ctx.effects.jira.issue(key)
    except JiraError as e:
        log.warning("%s: could not read the ticket from JIRA: %s", key, e)
        return None


def _decide_and_record(ctx, delivery_id: str, key: str, event) -> bytes:
    """Decide, then in one transaction: keep the plan, the ticket memory, timers and the timeline."""
    memory = ctx.tickets.memory(key)
    plan = decide(ctx.rules, event, memory, _now_ms())
    t = plan.reading.transition
    effects: dict[str, list[int]] = {}
    for e in plan.effects:
        effects.setdefault(e.rule, []).append(e.index)
    summary = (f"stale: {plan.reading.note}" if plan.reading.stale
               else (t.describe() if t else "no lifecycle transition"))
    stored = json.dumps({"effects": effects, "summary": summary}).encode()

    gen = generation_of(delivery_id)
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.set(_plan_key(delivery_id), stored, ex=ctx.deliveries.ttl)
    ctx.audit.record(key, "delivery", pipe=pipe, delivery=delivery_id, webhook_event=event.webhook_event,
                     event_type=event.event_type, status=event.status, status_change=event.status_change,
                     outcome=summary)
    if not plan.reading.stale:
        ctx.tickets.save(key, plan.memory, {**event.snapshot(), "key": key}, pipe=pipe)
    if t and t.entered and not plan.reading.stale:
        ctx.tickets.count_entry(key, t.entered, pipe=pipe)
    if t:
        ctx.audit.record(key, "transition", pipe=pipe, left=t.left, entered=t.entered, from_status=t.from_status,
                         to_status=t.to_status, inferred=t.inferred)
    for rule in plan.cancel:
        ctx.timers.cancel(rule, key, pipe=pipe)
        ctx.audit.record(key, "timer cancelled", pipe=pipe, rule=rule,
                         because=t.describe() if t else event.webhook_event)
    for arm in plan.arm:
        ctx.timers.arm(arm.rule, key, arm.due_ms / 1000, gen, pipe=pipe)
        ctx.audit.record(key, "timer armed", pipe=pipe, rule=arm.rule, due_ms=arm.due_ms, generation=gen)
    for rule in effects:
        ctx.audit.record(key, "rule fired", pipe=pipe, rule=rule, delivery=delivery_id)
    if t:
        for rule, why in plan.skipped:
            ctx.audit.record(key, "rule skipped", pipe=pipe, rule=rule, why=why)
    pipe.execute()
    return stored


def fire_timer(member: str, generation: str) -> str:
    """Perform a due timer's rule, if the timer is still this generation and the ticket still in the state.

    The ticket is re-read from JIRA (its memory from webhooks in dry run), so a
    late or cancelled timer never acts on a ticket that has moved on.
    """
    ctx = current()
    rule_name, key = split_member(member)
    with ctx.tickets.lock(key):
        if ctx.timers.generation(member) != generation:
            ctx.audit.record(key, "timer superseded", rule=rule_name, generation=generation)
            return "superseded"
        rule = ctx.rules.rule(rule_name)
        if rule is None or not rule.enabled:
            ctx.timers.release(member, generation)
            ctx.audit.record(key, "timer dropped", rule=rule_name, why="rule removed or disabled")
            return "rule gone"
        memory = ctx.tickets.memory(key)
        snapshot = ctx.tickets.snapshot(key) or {"key": key}
        ticket = Ticket.from_snapshot({**snapshot, "status": memory.status}, since_ms=memory.since_ms,
                                      times_reopened=ctx.tickets.entries(key, "reopened"))
        if not ctx.effects.jira.dry_run:
            try:
                ticket = ticket.refreshed(ctx.effects.jira.issue(key))
            except JiraError as e:
                if e.status != 404:
                    raise
                ctx.timers.release(member, generation)
                ctx.audit.record(key, "timer dropped", rule=rule_name, why=f"JIRA no longer shows the ticket: {e}")
                return "ticket gone"
        prefix = f"timer-{key}-{generation}"      # effect ids are unique per ticket and arming
        # A retry of a firing that already acted (say, closed the ticket, then the mail failed)
        # resumes it: the ticket has left the state because of this very timer.
        resuming = ctx.effects.ledger.get(f"{prefix}:{rule_name}:0") != {}
        state = ctx.rules.state_of(ticket.status)
        if state != rule.when.entered and not resuming:
            ctx.timers.release(member, generation)
            ctx.audit.record(key, "timer skipped", rule=rule_name, why=f"ticket is now {ticket.status} ({state})")
            return f"skipped: ticket is now {ticket.status}"
        ctx.audit.record(key, "timer resumed" if resuming else "timer fired", rule=rule_name, generation=generation)
        steps = [(e.index, e.action) for e in plan_effects(ctx.rules, rule_name)]
        ctx.effects.perform_rule(rule_name, steps, ticket, prefix)
        ctx.timers.release(member, generation)
    return "fired"
