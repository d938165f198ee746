"""Firing due timers: the pump's jobs, each firing many timers, and a timer's own job.

A firing job takes its timers in rounds: TIMER_ROUND at a time in dry run, one at a
time with JIRA configured (each ticket is then read from JIRA just before it is acted
on). A round reads what it needs of all its timers in two round trips (generations;
what relance remembers of the tickets), takes the tickets' locks in one, re-checks the
generations (and whether another job is firing the same timer) under the locks in one,
claims the fired timers' effects in the ledger together in one, and records every
firing, skip and drop and gives the locks back in one. The effects are then performed,
each once; the outcomes of those that change nothing outside
relance (dry-run JIRA actions, mail to the outbox) are written with the release or
re-arming of the round's fired timers, in one more round trip.

Each timer stays on its own. A timer whose firing raises (JIRA away, say), or whose
ticket another job holds, goes on in its own job (``workers.jobs.fire_timer``), which
RQ retries and which parks the timer when it gives up; the other timers of the job are
neither held up nor fired again. The firing job itself is not retried: each of its
timers stays claimed in the timer index until it is done with, so the timers of a job
lost with its worker come due again when their lease ends. A job that has used half
its time after a round puts its remaining timers back, due now, for the pumps to queue
again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from rq import get_current_job

from . import defaults
from .actions import Ticket
from .context import Context, current
from .core.decisions import next_firing, plan_effects
from .core.rules import Rule
from .exceptions import EffectBusy, TicketBusy
from .jobs import _no_longer_fits, _time_left, split_generation, ticket_now
from .logs import about
from .stores.queue import enqueue_timer
from .stores.timers import GENERATION_KEY, job_id, split_member

log = logging.getLogger("relance.timers")


@dataclass
class Firing:
    """One due timer on its way through a round; ``outcome`` is set once it is done with."""

    member: str
    generation: str
    due: float | None            # when it was due, epoch seconds
    rule_name: str = field(init=False)
    key: str = field(init=False)
    rule: Rule | None = None
    ticket: Ticket | None = None
    outcome: str | None = None

    def __post_init__(self):
        self.rule_name, self.key = split_member(self.member)

    @property
    def prefix(self) -> str:
        return f"timer-{self.key}-{self.generation}"      # effect ids are unique per ticket and arming


def fire_timers(timers: list[list]) -> str:
    """RQ job: fire the due timers ``[[member, generation, due], ...]`` a pump claimed, each on its own
    (see the module's docstring). Returns how many ended how, e.g. ``48 fired, 2 skipped``."""
    ctx = current()
    started = time.monotonic()
    job = get_current_job()
    budget = (job.timeout if job is not None and job.timeout else ctx.settings.job_timeout) / 2
    firings = [Firing(m, g, due) for m, g, due in timers]
    size = defaults.TIMER_ROUND if ctx.effects.jira.dry_run else 1
    for start in range(0, len(firings), size):
        if start and time.monotonic() - started > budget:
            _put_back(ctx, firings[start:])
            break
        fire_round(ctx, firings[start:start + size])
    counts = Counter((f.outcome or "").partition(":")[0] for f in firings)
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))


def fire_alone(member: str, generation: str, due: float | None = None) -> str:
    """Fire one timer in its own job: a failure raises, for RQ to retry the job, and a busy ticket is
    waited for (TicketBusy after the lock wait). Returns the outcome: ``fired``, ``superseded``,
    ``skipped: why`` or ``dropped: why``."""
    firing = Firing(member, generation, due)
    fire_round(current(), [firing], alone=True)
    return firing.outcome


def fire_round(ctx: Context, firings: list[Firing], alone: bool = False) -> None:
    """Fire ``firings`` if each is still its generation and its ticket still fits its rule; each ends with
    its ``outcome``. ``alone``: one timer in its own job (failures raise); otherwise a timer whose firing
    fails or whose ticket is busy is handed to a job of its own."""
    writes = ctx.redis.pipeline(transaction=False)
    _read(ctx, firings, writes, alone)
    fired, plans, ids, claims = _lock_and_record(ctx, [f for f in firings if f.outcome is None], writes, alone)
    performed, failed, taken = [], [], 0
    try:
        for f, steps, each in zip(fired, plans, ids):
            mine, taken = claims[taken:taken + len(each)], taken + len(each)
            with about(ticket=f.key):
                try:
                    ctx.effects.perform_rule(f.rule_name, steps, f.ticket, f.prefix, claims=mine, writes=writes)
                except Exception as e:
                    if alone:
                        raise
                    failed.append((f, e))
                    continue
            performed.append(f)
    finally:
        # The effects' local outcomes, claims given back, and the fired timers released or re-armed: one round trip.
        _release_or_rearm(ctx, performed, writes)
    for f, e in failed:
        _hand_off(ctx, f, e)


def _read(ctx: Context, firings: list[Firing], writes, alone: bool) -> None:
    """The generation, rule and ticket of each timer; superseded and dropped ones get their outcome."""
    for f, generation in zip(firings, ctx.timers.generations([f.member for f in firings])):
        if generation != f.generation:
            _superseded(ctx, f, writes)
            continue
        f.rule = ctx.rules.rule(f.rule_name)
        if f.rule is None or not f.rule.enabled:
            _drop(ctx, f, "rule removed or disabled", writes)
    live = [f for f in firings if f.outcome is None]
    views = ctx.tickets.views([f.key for f in live])
    for f in live:
        if ctx.effects.jira.dry_run and not views[f.key].known:
            _drop(ctx, f, "relance no longer remembers the ticket", writes)
            continue
        try:
            with about(ticket=f.key):
                f.ticket = ticket_now(ctx, f.key, views[f.key])
        except Exception as e:
            if alone:
                raise
            _hand_off(ctx, f, e)
            continue
        if f.ticket is None:
            _drop(ctx, f, "JIRA no longer shows the ticket", writes)


def _lock_and_record(ctx: Context, firings: list[Firing], writes, alone: bool):
    """Under the tickets' locks: check each generation again (a delivery may have cancelled or re-armed the
    timer meanwhile), whether another job is firing the same timer now (it holds the claim of its first
    effect), and whether its ticket still fits the rule; record each firing or skip, claim the fired
    timers' effects in the ledger (one round trip), then give the locks back, with the writes of the
    round, in one round trip. Returns the fired timers, their plans, their effect ids and the claims.

    The claims are taken before the locks are given back, so a job firing the same timer (claimed again
    after its lease ran out) finds them held and leaves the timer to this one, instead of recording it
    fired a second time."""
    tokens = ctx.tickets.try_lock([f.key for f in firings], wait=ctx.tickets.lock_wait if alone else 0)
    locked = [f for f in firings if f.key in tokens]
    failed: list[tuple[Firing, Exception]] = []
    busy: list[Firing] = []
    fired: list[Firing] = []
    plans, ids, claims = [], [], []
    try:
        pipe = ctx.redis.pipeline(transaction=False)
        for f in locked:
            first = ctx.effects.ledger.key(f"{f.prefix}:{f.rule_name}:0")
            pipe.hget(GENERATION_KEY, f.member)
            pipe.exists(first)
            pipe.exists(first + ":claim")
        found = pipe.execute() if locked else []
        for i, f in enumerate(locked):
            generation, began, held = found[3 * i], found[3 * i + 1], found[3 * i + 2]
            if generation is None or generation.decode() != f.generation:
                _superseded(ctx, f, writes)
                continue
            if held:
                busy.append(f)
                continue
            try:
                # A firing that already acted (say, closed the ticket, then the mail failed) resumes: the ticket
                # has left the state because of this very timer.
                why = None if began else _no_longer_fits(ctx, f.rule, f.ticket)
            except Exception as e:
                if alone:
                    raise
                failed.append((f, e))
                continue
            if why:
                ctx.timers.release(f.member, f.generation, pipe=writes)
                ctx.audit.record(f.key, "timer skipped", pipe=writes, rule=f.rule_name, why=why)
                f.outcome = f"skipped: {why}"
                continue
            ctx.audit.record(f.key, "timer resumed" if began else "timer fired", pipe=writes, rule=f.rule_name,
                             generation=f.generation)
            if not began and f.due is not None:
                ctx.effects.metrics.observe("lateness", max(0.0, time.time() - f.due), pipe=writes)
            ctx.tickets.touch(f.key, pipe=writes)
            fired.append(f)
        plans = [[(e.index, e.action) for e in plan_effects(ctx.rules, f.rule_name)] for f in fired]
        ids = [ctx.effects.effect_ids(f.rule_name, steps, f.prefix) for f, steps in zip(fired, plans)]
        claims = ctx.effects.ledger.claim_all([i for each in ids for i in each], _time_left())     # one round trip
    finally:
        ctx.tickets.unlock(tokens, pipe=writes)
        writes.execute()
    for f in firings:
        if f.key not in tokens:
            if alone:
                raise TicketBusy(f"{f.key}: another job held the ticket's lock for {ctx.tickets.lock_wait}s")
            _hand_off(ctx, f)
    for f in busy:
        if alone:
            raise EffectBusy(f"{f.member}: another job is firing it")
        _hand_off(ctx, f)
    for f, e in failed:
        _hand_off(ctx, f, e)
    return fired, plans, ids, claims


def _release_or_rearm(ctx: Context, firings: list[Firing], writes) -> None:
    """Forget the fired timers, or arm a repeating rule's next firing, with the round's ``writes`` (and note
    the re-armed ones on their timelines: one round trip more)."""
    repeats, start = [], len(writes)
    for f in firings:
        base, firing = split_generation(f.generation)
        due_ms = int((f.due if f.due is not None else time.time()) * 1000)
        next_ms = next_firing(ctx.rules, f.rule, due_ms, firing)
        if next_ms is None:
            ctx.timers.release(f.member, f.generation, pipe=writes)
        else:
            ctx.timers.rearm(f.member, f.generation, next_ms / 1000, f"{base}-r{firing + 1}", pipe=writes)
        repeats.append((f, next_ms, f"{base}-r{firing + 1}", firing + 1))
        f.outcome = "fired"
    done = writes.execute()[start:]
    notes = ctx.redis.pipeline(transaction=False)
    for (f, next_ms, generation, repeat), armed in zip(repeats, done):
        if next_ms is not None and armed:
            ctx.audit.record(f.key, "timer armed", pipe=notes, rule=f.rule_name, due_ms=next_ms,
                             generation=generation, repeat=repeat)
    notes.execute()


def _hand_off(ctx: Context, f: Firing, error: Exception | None = None) -> None:
    """Go on with a timer in a job of its own (at the front of the queue), which RQ retries and which parks
    the timer if it gives up; meanwhile the timer is held, so the pumps leave it to that job."""
    own = job_id(f.member, f.generation)
    if not enqueue_timer(ctx.queue, own, f.member, f.generation, f.due, timeout=ctx.settings.job_timeout,
                         at_front=True):
        log.warning("timer %s (%s): its own job %s exists already", f.member, f.generation, own)
    ctx.timers.hold(f.member, f.generation, time.time() + ctx.timers.own_job_hold, firing=True)
    if error is not None:
        log.warning("timer %s (%s) failed in a firing job; it goes on in its own job %s: %s", f.member,
                    f.generation, own, error, exc_info=error, extra={"ticket": f.key})
        job = get_current_job()
        ctx.audit.record(f.key, "attempt failed", job=job.id if job else None, rule=f.rule_name,
                         reason=f"{type(error).__name__}: {error}"[:500], continues_in=own)
    f.outcome = "handed off"


def _put_back(ctx: Context, firings: list[Firing]) -> None:
    """Make timers this job has no time left for due now again: a pump queues them in a new job."""
    for f in firings:
        ctx.timers.hold(f.member, f.generation, time.time())
        f.outcome = "put back"


def _superseded(ctx: Context, f: Firing, writes) -> None:
    ctx.audit.record(f.key, "timer superseded", pipe=writes, rule=f.rule_name, generation=f.generation)
    f.outcome = "superseded"


def _drop(ctx: Context, f: Firing, why: str, writes) -> None:
    ctx.timers.release(f.member, f.generation, pipe=writes)
    ctx.audit.record(f.key, "timer dropped", pipe=writes, rule=f.rule_name, why=why)
    f.outcome = f"dropped: {why}"
