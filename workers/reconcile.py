"""Reconcile: repair what relance missed while JIRA's webhooks could not reach it.

JIRA retries a webhook for about 30 minutes, then drops it; a longer outage
loses events. Reconcile asks JIRA for the tickets of the mapped statuses updated
lately and compares each with relance's memory (workers/stores/tickets.py):

- JIRA's status maps to another lifecycle state than relance remembers, or
  relance does not know the ticket: a synthetic status-change delivery is built
  from the issue (``jira:issue_updated``, changelog from the remembered status
  to JIRA's, dated by the issue's ``updated``) and queued like a webhook, so the
  very same job (workers/jobs.py process_delivery: decide, record, effects)
  arms or cancels timers and performs what the rules say; due timers fire
  through the pump. Its id is stable per (ticket, updated, status): a second
  reconcile before the worker took it queues nothing more.
- The state matches, but a timed rule of that state (one that does not care who
  moved the ticket) has no pending timer and the timeline does not show it fired,
  was cancelled, skipped or dropped since the ticket entered the state: its timer
  is armed from when the ticket entered the state.
  relance's memory says when (``since``); when it does not, the issue's
  ``updated``. ``statuscategorychangedate`` is not used: a move between two
  statuses of one category (In Progress -> Waiting for feedback) leaves it
  unchanged, so it may be earlier than the entry and would arm a timer early;
  ``updated`` may only be later (a comment since), so a timer is never early.

Each repair is recorded on the ticket's timeline as ``reconciled`` (from, to, why).

A ticket updated in the last RECONCILE_GRACE_SECONDS (35 minutes) is left for the
next run: JIRA may still be retrying its webhook (for about 30 minutes), and a
change fed by both would be acted on twice (a transition read from a changelog
does not depend on what relance remembers).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field

from . import defaults
from .core.decisions import due_after
from .core.events import jira_time_ms
from .exceptions import TicketBusy
from .jobs import generation_of
from .stores.queue import enqueue_delivery

log = logging.getLogger("relance.reconcile")

FIELDS = ["summary", "status", "priority", "labels", "reporter", "assignee", "project", "issuetype", "updated"]
LOCK_KEY = "relance:reconcile:lock"
# What the timeline says once a timer's story for this stay in the state is over.
_TIMER_ENDED = frozenset({"timer fired", "timer resumed", "timer cancelled", "timer skipped", "timer dropped"})


@dataclass
class Report:
    dry_run: bool = False
    seen: int = 0
    consistent: int = 0
    recent: int = 0         # updated within the grace: their webhook may still come
    fed: list[str] = field(default_factory=list)        # "KEY: from -> to" of synthetic deliveries queued
    armed: list[str] = field(default_factory=list)      # "KEY: rule" of timers armed
    failed: list[str] = field(default_factory=list)     # "KEY: why" of tickets left for the next run

    def lines(self) -> list[str]:
        if self.dry_run:
            return ["nothing to reconcile: JIRA is not configured (dry run)"]
        out = [f"{self.seen} tickets seen in JIRA, {self.consistent} consistent with relance's memory, "
               f"{self.recent} updated too recently (left for the next run)"]
        out += [f"queued a status change: {line}" for line in self.fed]
        out += [f"armed a missing timer: {line}" for line in self.armed]
        out += [f"left for the next run: {line}" for line in self.failed]
        return out


def jql_for(rules, since_seconds: int) -> str:
    """The tickets of every status the rules file maps, updated in the last ``since_seconds``."""
    names = sorted({n for statuses in rules.statuses.values() for n in statuses})
    quoted = ", ".join('"' + n.replace("\\", "\\\\").replace('"', '\\"') + '"' for n in names)
    return f'status in ({quoted}) AND updated >= "-{max(1, int(since_seconds) // 60)}m" ORDER BY key ASC'


def reconcile(ctx, since_seconds: int = defaults.RECONCILE_SINCE_SECONDS, jira=None,
              grace_seconds: int = defaults.RECONCILE_GRACE_SECONDS) -> Report:
    """Compare the tickets JIRA shows as updated in the last ``since_seconds`` with relance's
    memory, and repair what differs (see the module's docstring). ``jira``: the client to ask
    (default: the context's)."""
    jira = jira or ctx.effects.jira
    if jira.dry_run:
        return Report(dry_run=True)
    report = Report()
    settled_ms = int((time.time() - grace_seconds) * 1000)
    for issue in jira.search(jql_for(ctx.rules, since_seconds), FIELDS, defaults.RECONCILE_PAGE_SIZE):
        report.seen += 1
        updated_ms = jira_time_ms((issue.get("fields") or {}).get("updated"))
        if updated_ms is None or updated_ms > settled_ms:
            report.recent += 1
            continue
        try:
            _repair(ctx, issue, report)
        except TicketBusy as e:         # a job is deciding on it right now: the next run sees the outcome
            report.failed.append(f"{issue.get('key')}: {e}")
    return report


def _repair(ctx, issue: dict, report: Report) -> None:
    key = issue.get("key")
    fields = issue.get("fields") or {}
    status = (fields.get("status") or {}).get("name")
    state = ctx.rules.state_of(status)
    if not key or state is None:
        return
    updated_ms = jira_time_ms(fields.get("updated"))
    known = ctx.tickets.known(key)
    memory = ctx.tickets.memory(key)
    if not known or memory.state != state:
        _feed(ctx, key, issue, status, state, updated_ms, memory if known else None, report)
        return
    armed = _arm_missing(ctx, key, status, state, memory.since_ms or updated_ms)
    report.armed += [f"{key}: {rule}" for rule in armed]
    if not armed:
        report.consistent += 1


def _feed(ctx, key, issue, status, state, updated_ms, memory, report) -> None:
    """Queue a synthetic status-change delivery built from the issue, as a webhook would come."""
    from .stores.deliveries import DeliveryStore
    from_status = memory.status if memory else None
    body = {"webhookEvent": "jira:issue_updated", "issue_event_type_name": "issue_generic",
            "timestamp": updated_ms, "issue": issue,
            "changelog": {"id": "reconcile", "items": [
                {"field": "status", "fieldtype": "jira", "fieldId": "status",
                 "fromString": from_status, "toString": status}]}}
    digest = hashlib.sha1(f"{key}|{updated_ms}|{status}".encode()).hexdigest()[:16]
    did = f"reconcile-{digest}"
    if not DeliveryStore(ctx.redis, keep=ctx.settings.retention).put(did, json.dumps(body).encode()):
        return          # fed by an earlier run; its job does (or did) the rest
    why = (f"JIRA shows {status!r} ({state}) but relance remembered {from_status!r} ({memory.state})"
           if memory else f"relance did not know the ticket; JIRA shows {status!r} ({state})")
    ctx.audit.record(key, "reconciled", **{"from": from_status, "to": status, "why": why, "delivery": did})
    enqueue_delivery(ctx.queue, did, timeout=ctx.settings.job_timeout)
    report.fed.append(f"{key}: {from_status or '(unknown)'} -> {status}")


def _arm_missing(ctx, key: str, status: str, state: str, since_ms: int) -> list[str]:
    """Arm the timers of ``state``'s timed rules that are missing, unless their story is over."""
    # A rule that wants the move made by someone (``by: support``) is left alone: JIRA's issue does not say who.
    wanted = [r for r in ctx.rules.rules if r.timed and r.enabled and r.when.kind == "entered"
              and r.when.who == "anyone" and state in r.when.states and ctx.timers.get(r.name, key) is None]
    if not wanted:
        return []
    armed = []
    with ctx.tickets.lock(key):
        timeline = ctx.audit.timeline(key)
        for rule in wanted:
            if ctx.timers.get(rule.name, key) is not None or _timer_ended(timeline, rule.name, since_ms):
                continue
            due_ms = due_after(ctx.rules, rule, since_ms, rule.after)
            gen = generation_of(f"reconcile-{key}-{since_ms}")
            pipe = ctx.redis.pipeline(transaction=True)
            ctx.timers.arm(rule.name, key, due_ms / 1000, gen, pipe=pipe)
            ctx.audit.record(key, "reconciled", pipe=pipe, **{
                "from": status, "to": status, "rule": rule.name,
                "why": f"{state} since {since_ms} but no pending timer for {rule.name}"})
            ctx.audit.record(key, "timer armed", pipe=pipe, rule=rule.name, due_ms=due_ms, generation=gen)
            pipe.execute()
            armed.append(rule.name)
    return armed


def _timer_ended(timeline: list[dict], rule: str, since_ms: int) -> bool:
    """True if the timeline shows the rule's timer fired, was cancelled, skipped or dropped
    since ``since_ms`` (entries are dated by their stream id, when relance wrote them)."""
    return any(e["kind"] in _TIMER_ENDED and e.get("rule") == rule and int(e["id"].split("-")[0]) >= since_ms
               for e in timeline)


def reconcile_locked(ctx, since_seconds: int = defaults.RECONCILE_SINCE_SECONDS, jira=None) -> Report | None:
    """Run reconcile unless another process is running it (a Redis lock); None if it was."""
    lock = ctx.redis.lock(LOCK_KEY, timeout=defaults.RECONCILE_LOCK_SECONDS, blocking=False)
    if not lock.acquire(blocking=False):
        log.info("reconcile: another worker is running it")
        return None
    try:
        return reconcile(ctx, since_seconds, jira)
    finally:
        try:
            lock.release()
        except Exception:       # expired meanwhile: nothing to release
            pass


class Reconciler(threading.Thread):
    """Background thread of a worker: reconcile at start-up, then every ``interval`` seconds.

    A failure (JIRA or Redis away) is logged and tried again at the next interval;
    it never stops the worker.
    """

    def __init__(self, ctx, interval: float, since: int = defaults.RECONCILE_SINCE_SECONDS):
        super().__init__(name="relance-reconcile", daemon=True)
        from .clients.jira import make_jira
        self.ctx, self.interval, self.since = ctx, interval, since
        self.jira = make_jira(ctx.settings)         # its own HTTP session: jobs use theirs meanwhile
        self.jira.timing = getattr(ctx.effects.jira, "timing", None)     # counted in relance_remote_seconds
        self.stopping = threading.Event()
        self.runs = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                report = reconcile_locked(self.ctx, self.since, self.jira)
                if report is not None:
                    for line in report.lines():
                        log.info("reconcile: %s", line)
            except Exception:
                log.exception("reconcile failed; trying again in %ss", self.interval)
            self.runs += 1
            self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
