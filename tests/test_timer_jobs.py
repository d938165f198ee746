"""Firing jobs: many due timers to an RQ job, each timer on its own. Real Redis and RQ workers, the JIRA
and SendGrid stand-ins (or a dry run with the outbox)."""

from __future__ import annotations

import time

import pytest
from redis.lock import Lock

from tests.jira_events import move
from tests.support import KEY, deliver, fire_due, kinds, sent
from workers import context as process_context
from workers.context import Context
from workers.exceptions import EffectBusy
from workers.jobs import fire_timer
from workers.stores.audit import Audit
from workers.stores.queue import enqueue_timers
from workers.stores.timers import job_id, member, split_member
from workers.timer_jobs import fire_timers
from workers.worker import run_worker

LATER = 6 * 86400          # past the shipped auto-close's 5 days


@pytest.fixture
def dry_run(settings, redis):
    """The worker's context without JIRA or SendGrid: JIRA actions recorded, mail to the outbox."""
    ctx = Context.build(settings, redis)
    process_context.use(ctx)
    yield ctx
    process_context.use(None)


def resolve(ctx, jira, count: int, cloud: bool = True) -> list[str]:
    """``count`` tickets moved to Resolved, each webhook delivered: each has its auto-close timer armed."""
    keys = [KEY] + [f"SUP-{i}" for i in range(2, count + 1)]
    for key in keys[1:]:
        jira.add_issue(key, status="In Progress", reporter="acc-jane")
    for i, key in enumerate(keys):
        deliver(ctx, move(jira, key, "Resolved", cloud=cloud), f"r{i}")
    return keys


def firing_results(ctx) -> list[str]:
    """What each finished firing job returned."""
    registry = ctx.queue.finished_job_registry
    return sorted(ctx.queue.fetch_job(j).return_value() for j in registry.get_job_ids() if j.startswith("timers-"))


def test_one_firing_job_fires_a_burst_of_timers_each_once(dry_run, jira, settings):
    keys = resolve(dry_run, jira, 28, cloud=False)        # Server payloads carry the reporter's email
    assert fire_due(dry_run, time.time() + LATER) == 28
    assert firing_results(dry_run) == ["28 fired"]       # one job, in rounds of 25 and 3
    for key in keys:
        timeline = [e["kind"] for e in Audit(dry_run.redis).timeline(key)]
        assert timeline.count("timer fired") == 1 and timeline[-3:] == ["timer fired", "effect done", "effect done"]
    assert dry_run.timers.count() == 0
    assert len(list(settings.outbox_dir.glob("timer-*auto-close*.eml"))) == 28
    assert b"relance_timer_lateness_seconds_count 28.0" in dry_run.effects.metrics.exposition("relance")


def test_a_timer_in_two_firing_jobs_acts_once(dry_run, jira, settings):
    resolve(dry_run, jira, 1, cloud=False)
    [claimed] = dry_run.timers.claim(time.time() + LATER)
    enqueue_timers(dry_run.queue, [claimed])
    enqueue_timers(dry_run.queue, [claimed])                # say, claimed again after its lease ran out
    run_worker(dry_run, burst=True)
    # The worker's threads may run both jobs at once: the second then finds the ticket locked and
    # hands the timer to a job of its own, which finds it superseded. Either way it acts once.
    assert firing_results(dry_run) in (["1 fired", "1 superseded"], ["1 fired", "1 handed off"])
    assert kinds(dry_run).count("timer fired") == 1
    assert len(list(settings.outbox_dir.glob("timer-*auto-close*.eml"))) == 1


def test_a_job_that_finds_its_timer_being_fired_by_another_leaves_it_to_that_one_and_records_nothing(dry_run, jira):
    """Two jobs with the same timer (claimed again after its lease ran out): the second to lock the ticket
    finds the first one's claim on the effects, taken before the first let the ticket go, and leaves the
    timer to a job of its own, which finds it done. The timer is recorded fired once."""
    resolve(dry_run, jira, 1, cloud=False)
    [claimed] = dry_run.timers.claim(time.time() + LATER)
    member, generation, _ = claimed
    rule, key = split_member(member)
    assert dry_run.effects.ledger.claim(f"timer-{key}-{generation}:{rule}:0", 60)     # the first job, acting
    assert fire_timers([list(claimed)]) == "1 handed off"
    assert "timer fired" not in kinds(dry_run)
    assert dry_run.queue.fetch_job(job_id(member, generation)) is not None


def test_a_timer_whose_firing_fails_goes_on_in_its_own_job_and_the_others_fire(service, jira, sendgrid):
    resolve(service, jira, 3)
    timer = service.timers.get("auto-close", "SUP-2")
    jira.fail_next(1, status=503, retry_after=None, path_contains="/issue/SUP-2", method="GET")
    fire_due(service, time.time() + LATER)
    assert firing_results(service) == ["2 fired, 1 handed off"]
    own = service.queue.fetch_job(job_id(member("auto-close", "SUP-2"), timer.generation))
    assert own.func_name == "workers.jobs.fire_timer" and own.get_status() == "finished"
    assert [jira.issue(k)["fields"]["status"]["name"] for k in (KEY, "SUP-2", "SUP-3")] == ["Closed"] * 3
    assert sorted(m["custom_args"]["issue_key"] for m in sent(sendgrid, "auto_closed")) == [KEY, "SUP-2", "SUP-3"]
    [failed] = [e for e in Audit(service.redis).timeline("SUP-2") if e["kind"] == "attempt failed"]
    assert "503" in failed["reason"] and failed["continues_in"] == own.id
    assert "attempt failed" not in kinds(service, KEY) and service.failures.list() == []


def test_a_timer_whose_ticket_is_busy_is_held_for_its_own_job(service, jira, sendgrid):
    resolve(service, jira, 3)
    timer = service.timers.get("auto-close", "SUP-2")
    service.tickets.lock_wait = 0.2
    lock = Lock(service.redis, "relance:lock:SUP-2", timeout=30)
    lock.acquire()                                          # a delivery of SUP-2 is being decided
    fire_due(service, time.time() + LATER)
    assert [jira.issue(k)["fields"]["status"]["name"] for k in (KEY, "SUP-2", "SUP-3")] == \
        ["Closed", "Resolved", "Closed"]
    m = member("auto-close", "SUP-2")
    own = service.queue.fetch_job(job_id(m, timer.generation))
    assert own.get_status() == "scheduled"                  # busy twice: RQ retries it later
    held = service.timers.get("auto-close", "SUP-2")
    assert held.generation == timer.generation and held.due > time.time() + 3600
    assert service.timers.firing([m], time.time()) == {m}  # `relance timers` says it is being fired
    lock.release()
    assert fire_timer(m, timer.generation, timer.due) == "fired"    # the retry, once the ticket is free
    assert jira.issue("SUP-2")["fields"]["status"]["name"] == "Closed"
    assert service.timers.get("auto-close", "SUP-2") is None
    assert len(sent(sendgrid, "auto_closed")) == 3


def test_a_firing_job_out_of_time_puts_its_remaining_timers_back_due_now(settings, redis, jira):
    ctx = Context.build(settings.replace(job_timeout=0.001), redis)
    process_context.use(ctx)
    try:
        keys = resolve(ctx, jira, 28, cloud=False)
        claimed = ctx.timers.claim(time.time() + LATER)
        assert fire_timers([list(c) for c in claimed]) == "25 fired, 3 put back"     # one round, then no time
        back = [ctx.timers.get("auto-close", k) for k in keys]
        assert sum(t is not None for t in back) == 3
        assert all(t.due <= time.time() for t in back if t)                          # due now: claimed again
        assert ctx.timers.firing([member("auto-close", k) for k in keys], time.time()) == set()
        fire_due(ctx, time.time())
        assert ctx.timers.count() == 0
        assert all(kinds(ctx, k).count("timer fired") == 1 for k in keys)
    finally:
        process_context.use(None)


def test_a_rule_being_performed_elsewhere_is_not_begun_again(service, jira, sendgrid):
    resolve(service, jira, 1)
    timer = service.timers.get("auto-close", KEY)
    prefix = f"timer-{KEY}-{timer.generation}"
    token = service.effects.ledger.claim(f"{prefix}:auto-close:1")      # another execution sends the email
    with pytest.raises(EffectBusy):
        fire_timer(member("auto-close", KEY), timer.generation)      # RQ retries it
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Resolved"    # not even the transition was done
    service.effects.ledger.release(f"{prefix}:auto-close:1", token)
    assert fire_timer(member("auto-close", KEY), timer.generation) == "fired"
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Closed" and len(sent(sendgrid, "auto_closed")) == 1


def test_a_firing_job_that_fails_as_a_whole_is_in_rqs_failed_registry_not_in_relances_failures(dry_run):
    """Nothing to keep: each of its timers stays claimed in the index and comes due again after its lease."""
    enqueue_timers(dry_run.queue, [("auto-close|" + KEY,)])            # not a timer the job can read
    run_worker(dry_run, burst=True)
    [failed] = dry_run.queue.failed_job_registry.get_job_ids()
    assert failed.startswith("timers-") and dry_run.failures.list() == []
