"""RQ jobs. Plain functions imported by name; they take ids and re-read state from Redis.

Exceptions are never swallowed: RQ must see a failure to retry the job. A job
holds its ticket's decision lock only while it reads and writes Redis; calls to
JIRA and SendGrid happen outside it, each effect claimed in the ledger.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from datetime import timedelta

from rq import get_current_job
from rq.utils import now as rq_now

from . import defaults
from .actions import Ticket
from .context import Context, current
from .core.decisions import decide, no_longer_fits, plan_effects
from .core.events import TicketEvent, _person, parse_event
from .exceptions import JiraError, PayloadError
from .logs import about
from .stores.mail_events import PREFIX as MAIL_PREFIX, MailEventStore
from .sequencing import wait_for_turn
from .stores.timers import split_member

log = logging.getLogger("relance.jobs")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _time_left() -> float | None:
    """Seconds until this job's timeout kills it (None outside an RQ job), plus a second.

    An effect's claim lasts that long: a SIGKILLed worker's claims have lapsed by
    the time RQ retries its job (timeout + HEARTBEAT_GRACE after it started).
    """
    job = get_current_job()
    if job is None or not job.started_at or not job.timeout or job.timeout < 0:
        return None
    left = (job.started_at + timedelta(seconds=job.timeout) - rq_now()).total_seconds()
    return max(left, 0) + min(1, defaults.HEARTBEAT_GRACE_SECONDS)


def _in_turn(key: str) -> None:
    """Wait until the jobs of ticket ``key`` dequeued before this one in this worker are done
    (workers/sequencing.py); TicketBusy, which retries the job, if that takes half its time left."""
    left = _time_left()
    wait_for_turn(key, None if left is None else left / 2)


def generation_of(delivery_id: str) -> str:
    """A short, stable timer generation for timers armed by one delivery."""
    return hashlib.sha1(delivery_id.encode()).hexdigest()[:12]


def process_delivery(delivery_id: str) -> str:
    """RQ job: see ``_process_delivery``; its log lines name the delivery."""
    with about(delivery=delivery_id):
        return _process_delivery(delivery_id)


def _process_delivery(delivery_id: str) -> str:
    """Apply one accepted webhook delivery: decide, record the decision, then perform its effects.

    Idempotent: the decision is stored before any effect, so a retry (after a
    crash or a transient failure) performs the same decision, and the ledger
    skips effects already done. With JIRA configured, effects act on the ticket
    as JIRA shows it: a ticket JIRA does not show gets none, and a rule whose
    state the ticket has already left does not fire. Returns a short outcome.
    """
    ctx = current()
    event, outcome = read_delivery(ctx, delivery_id, lambda raw: parse_event(json.loads(raw)))
    if outcome is not None:
        return outcome
    key = event.issue_key
    if key is None and event.issue_id and not ctx.effects.jira.dry_run:
        # Server's comment_created may carry only the comment; its link names the issue id.
        key = (_jira_issue(ctx, event.issue_id) or {}).get("key")
    if key is None:
        ctx.deliveries.mark_done(delivery_id, "ignored: no ticket key in the payload, or JIRA does not show it")
        return "ignored: no ticket key"
    with about(ticket=key):
        _in_turn(key)
        return _apply_delivery(ctx, delivery_id, key, event)


def read_delivery(ctx: Context, delivery_id: str, parse):
    """(``parse(body)``, None) for a stored delivery still to process; else (None, the job's outcome): it
    was processed already, its body expired, or ``parse`` refused it (PayloadError, ValueError), in which
    case the delivery is marked done with the reason."""
    if ctx.deliveries.is_done(delivery_id):
        return None, "already processed"
    raw = ctx.deliveries.body(delivery_id)
    if raw is None:
        log.warning("delivery %s: body expired before processing", delivery_id)
        return None, "expired"
    try:
        return parse(raw), None
    except (PayloadError, ValueError, RecursionError) as e:
        ctx.deliveries.mark_done(delivery_id, f"ignored: {e}")
        return None, f"ignored: {e}"


def _apply_delivery(ctx: Context, delivery_id: str, key: str, event: TicketEvent, issue: dict | None = None) -> str:
    """Decide ``event`` once for this delivery, then perform the plan (``issue``: the ticket as JIRA
    showed it moments ago, if the caller read it)."""
    # Who relance itself is in JIRA (its own comments come back as webhooks): asked before the lock.
    roles_matter = event.adds_comment or ctx.rules.reads_roles()
    automation = ctx.effects.jira.own_accounts() if roles_matter else frozenset()
    customers = ctx.effects.jira.customer_accounts(ctx.rules.customer_groups) if roles_matter else frozenset()
    if issue is None and event.adds_comment and event.reporter is None and not ctx.effects.jira.dry_run \
            and ctx.tickets.memory(key).reporter is None:
        # A Cloud comment event does not name the reporter, and relance has not met the ticket yet.
        issue = _jira_issue(ctx, key)
        event = replace(event, reporter=_person(((issue or {}).get("fields") or {}).get("reporter")))
    with ctx.tickets.lock(key):
        stored = ctx.deliveries.plan(delivery_id)
        if stored is None:
            stored = _decide_and_record(ctx, delivery_id, key, event, automation, customers)
    plan = json.loads(stored)
    if plan["effects"]:
        _perform_planned(ctx, delivery_id, key, event, plan["effects"], issue)
    ctx.deliveries.mark_done(delivery_id, plan["summary"])
    return plan["summary"]


def _perform_planned(ctx: Context, delivery_id: str, key: str, event: TicketEvent, planned: dict,
                     issue: dict | None = None) -> None:
    """Perform the planned rules' effects; ``issue``: the ticket as JIRA showed it moments ago, if read."""
    memory = ctx.tickets.memory(key)
    extra = dict(since_ms=memory.since_ms or event.timestamp_ms, times_reopened=ctx.tickets.entries(key, "reopened"))
    if ctx.effects.jira.dry_run:
        ticket = Ticket.from_snapshot({**event.snapshot(), "key": key}, event=event, **extra)
    else:
        issue = issue or _jira_issue(ctx, key)
        if issue is None:
            for rule_name in planned:
                ctx.audit.record(key, "rule skipped", rule=rule_name, delivery=delivery_id,
                                 why="JIRA does not show the ticket (deleted, moved, or never existed)")
            return
        ticket = Ticket.from_issue(key, issue, event=event, **extra)
    for rule_name, indexes in planned.items():
        rule = ctx.rules.rule(rule_name)
        if rule is None:
            ctx.audit.record(key, "rule gone", rule=rule_name, delivery=delivery_id)
            continue
        steps = [(i, rule.do[i]) for i in indexes]
        prefix = delivery_id
        begun = any(ctx.effects.ledger.get(f"{prefix}:{rule_name}:{i}") for i in indexes)
        if not ctx.effects.jira.dry_run and not begun:
            why = _no_longer_fits(ctx, rule, ticket)
            if why:
                ctx.audit.record(key, "rule skipped", rule=rule_name, delivery=delivery_id, why=why)
                continue
        ctx.effects.perform_rule(rule_name, steps, ticket, prefix, _time_left())


def _no_longer_fits(ctx: Context, rule, ticket: Ticket) -> str | None:
    if rule.when.kind != "commented":
        return no_longer_fits(ctx.rules, rule, ticket)
    return no_longer_fits(ctx.rules, rule, ticket, ctx.effects.jira.own_accounts(),
                          ctx.effects.jira.customer_accounts(ctx.rules.customer_groups))


def _jira_issue(ctx: Context, key: str) -> dict | None:
    """The ticket as JIRA shows it now, or None if JIRA answers that it does not (4xx).

    429, 5xx and time-outs raise TransientError: the job is retried.
    """
    try:
        return ctx.effects.jira.issue(key)
    except JiraError as e:
        log.warning("%s: JIRA does not show the ticket: %s", key, e)
        return None


def _decide_and_record(ctx: Context, delivery_id: str, key: str, event, automation=frozenset(),
                       customers=frozenset()) -> bytes:
    """Decide, then in one transaction: keep the plan, the ticket memory, timers and the timeline."""
    memory = ctx.tickets.memory(key)
    plan = decide(ctx.rules, event, memory, _now_ms(), automation, customers)
    t = plan.reading.transition
    effects: dict[str, list[int]] = {}
    for e in plan.effects:
        effects.setdefault(e.rule, []).append(e.index)
    summary = (f"stale: {plan.reading.note}" if plan.reading.stale
               else (t.describe() if t else "no lifecycle transition"))
    stored = json.dumps({"effects": effects, "summary": summary}).encode()

    gen = generation_of(delivery_id)
    pipe = ctx.redis.pipeline(transaction=True)
    ctx.deliveries.save_plan(delivery_id, stored, pipe)
    ctx.audit.record(key, "delivery", pipe=pipe, delivery=delivery_id, webhook_event=event.webhook_event,
                     event_type=event.event_type, status=event.status, status_change=event.status_change,
                     outcome=summary)
    if plan.reading.clamped:
        ctx.audit.record(key, "clock", pipe=pipe, delivery=delivery_id, why=plan.reading.clamped)
    if not plan.reading.stale:
        ctx.tickets.save(key, plan.memory, _snapshot(ctx, event, key), pipe=pipe)
    else:
        ctx.tickets.touch(key, pipe=pipe)
    if t and t.entered and not plan.reading.stale:
        ctx.tickets.count_entry(key, t.entered, pipe=pipe)
    if t:
        ctx.audit.record(key, "transition", pipe=pipe, left=t.left, entered=t.entered, from_status=t.from_status,
                         to_status=t.to_status, inferred=t.inferred)
    pending = ctx.timers.pending_of([(rule, key) for rule in plan.cancel])     # the timeline says only what was
    for rule in plan.cancel:
        ctx.timers.cancel(rule, key, pipe=pipe)
        if (rule, key) in pending:
            ctx.audit.record(key, "timer cancelled", pipe=pipe, rule=rule,
                             because=t.describe() if t else event.webhook_event)
    for arm in plan.arm:
        ctx.timers.arm(arm.rule, key, arm.due_ms / 1000, gen, pipe=pipe)
        ctx.audit.record(key, "timer armed", pipe=pipe, rule=arm.rule, due_ms=arm.due_ms, generation=gen)
    for rule in effects:
        ctx.audit.record(key, "rule fired", pipe=pipe, rule=rule, delivery=delivery_id)
    if t and plan.skipped:      # one entry for all: most rules skip most events
        ctx.audit.record(key, "rules skipped", pipe=pipe, rules=dict(plan.skipped))
    pipe.execute()
    return stored


def _snapshot(ctx: Context, event: TicketEvent, key: str) -> dict:
    """What to keep of the ticket as the event shows it.

    In dry run it is all relance will ever know (a timer's email needs the
    reporter); with JIRA configured, JIRA is asked when acting, so no personal
    data is kept.
    """
    snap = {**event.snapshot(), "key": key}
    if ctx.effects.jira.dry_run:
        return snap
    return {k: snap[k] for k in ("key", "id", "project", "issue_type", "status")}


def fire_timer(member: str, generation: str, due: float | None = None) -> str:
    """RQ job: one timer in a job of its own (a timer whose firing failed in the pump's firing job, or a
    retry from the failures): see ``workers.timer_jobs.fire_alone``. Its log lines name the ticket."""
    from .timer_jobs import fire_alone      # it builds on this module's helpers
    with about(ticket=split_member(member)[1]):
        _in_turn(split_member(member)[1])
        return fire_alone(member, generation, due)


def split_generation(generation: str) -> tuple[str, int]:
    """(the arming's generation, how many times its rule fired before): ``abc-r2`` -> ("abc", 2)."""
    base, sep, n = generation.rpartition("-r")
    return (base, int(n)) if sep and n.isdigit() else (generation, 0)


def retry_rule(prefix: str, rule_name: str, key: str) -> str:
    """RQ job: perform again a rule one of whose effects was refused for good (say, no transition led to
    Closed until the workflow was fixed). The refused effect and those it stopped are reopened in the
    ledger; effects already done stay done. The ticket is read from JIRA again (from relance's memory in
    dry run), so the rule acts on the ticket as it is now."""
    with about(ticket=key):
        _in_turn(key)
        ctx = current()
        rule = ctx.rules.rule(rule_name)
        if rule is None:
            ctx.audit.record(key, "retry dropped", rule=rule_name, why="rule removed from the rules file")
            return "rule gone"
        for index in range(len(rule.do)):
            effect_id = f"{prefix}:{rule_name}:{index}"
            entry = ctx.effects.ledger.get(effect_id)
            if entry.get("state") == "failed" or (entry.get("state") == "skipped"
                                                  and entry.get("detail", "").startswith("not done:")):
                ctx.effects.ledger.reopen(effect_id)
        ticket = ticket_now(ctx, key)
        if ticket is None:
            ctx.audit.record(key, "retry dropped", rule=rule_name, why="JIRA no longer shows the ticket")
            return "ticket gone"
        if prefix.startswith(MAIL_PREFIX):      # a rule an email event fired: its templates read the event
            ticket.email_event = MailEventStore(ctx.redis).facts_for(prefix)
            if ticket.email_event is None:
                ctx.audit.record(key, "retry dropped", rule=rule_name,
                                 why="the email event that fired the rule is forgotten (kept "
                                     f"{defaults.MAIL_EVENT_TTL_SECONDS // 86400} days)")
                return "email event gone"
        ctx.audit.record(key, "rule retried", rule=rule_name, effects=prefix)
        steps = [(e.index, e.action) for e in plan_effects(ctx.rules, rule_name)]
        ctx.effects.perform_rule(rule_name, steps, ticket, prefix, _time_left())
        return "retried"


def ticket_now(ctx: Context, key: str, view=None) -> Ticket | None:
    """The ticket as it is now, for a rule to act on: as JIRA shows it (None if JIRA does not), or in dry
    run as relance remembers it from the webhooks. ``view``: what relance remembers of it, if read already
    (``TicketStore.views``)."""
    view = view or ctx.tickets.views([key])[key]
    extra = dict(since_ms=view.memory.since_ms, times_reopened=view.times_reopened)
    if ctx.effects.jira.dry_run:
        return Ticket.from_snapshot({**(view.snapshot or {"key": key}), "status": view.memory.status}, **extra)
    issue = _jira_issue(ctx, key)
    return Ticket.from_issue(key, issue, **extra) if issue is not None else None
