"""Nothing kept for ever: every key relance writes, but the timer index, expires after the retention
(refreshed on activity), and RQ keeps nothing longer."""

from __future__ import annotations

import time

from rq import Retry

from tests.jira_events import move
from tests.support import KEY, accept, deliver, fire_due
from workers import context as process_context
from workers.context import Context
from workers.stores.timers import GENERATION_KEY, PENDING_KEY
from workers.worker import run_worker

TIMER_INDEX = {PENDING_KEY, GENERATION_KEY}


def keys_without_ttl(redis) -> list[str]:
    return sorted(k.decode() for k in redis.scan_iter("*")
                  if redis.ttl(k) == -1 and k.decode() not in TIMER_INDEX
                  and not k.decode().startswith(("rq:queue:", "rq:queues", "rq:worker", "rq:wip:", "rq:finished:",
                                                 "rq:failed:", "rq:scheduled:", "rq:started:", "rq:deferred:",
                                                 "rq:canceled:")))


def test_after_a_whole_lifecycle_every_key_but_the_timer_index_expires(service, jira, sendgrid):
    jira.add_comment(KEY, "Could you send the logs?", author="acc-sam")
    deliver(service, move(jira, KEY, "Waiting for feedback"), "d1")
    deliver(service, move(jira, KEY, "Resolved"), "d2")
    fire_due(service, time.time() + 6 * 86400)                      # auto-close: transition + email
    jira.add_issue("SUP-2", status="Resolved", reporter="acc-jane")
    deliver(service, move(jira, "SUP-2", "Reopened"), "d3")        # escalation: priority, label, email
    jira.fail_next(2, status=503, retry_after=None, path_contains="/issue/SUP-2", method="GET")
    accept(service, move(jira, "SUP-2", "Waiting for feedback"), "d4", retry=Retry(max=1, interval=[0]))
    run_worker(service, burst=True)                                 # gives up: a failure record
    assert service.failures.count() == 1

    assert keys_without_ttl(service.redis) == []
    longest = service.rules.longest_delay()
    for key in (f"relance:ticket:{KEY}", f"relance:audit:{KEY}"):
        assert service.settings.retention + longest - 60 < service.redis.ttl(key) <= service.settings.retention + longest
    effects = list(service.redis.scan_iter("relance:effect:*"))
    assert len(effects) >= 6
    assert all(0 < service.redis.ttl(k) <= service.settings.retention for k in effects)
    processed = service.redis.ttl("relance:delivery:d1")
    assert 0 < processed <= 7 * 86400                               # processed bodies go after the dedupe window


def test_the_retention_is_the_operators_choice_and_activity_refreshes_it(settings, redis, jira, sendgrid):
    ctx = Context.build(settings.replace(retention=3600, jira_base_url=jira.url, jira_user_email=jira.email,
                                         jira_api_token=jira.api_token, sendgrid_api_key=sendgrid.api_key,
                                         sendgrid_api_host=sendgrid.url), redis)
    process_context.use(ctx)
    try:
        deliver(ctx, move(jira, KEY, "Waiting for feedback"), "d1")
        key = f"relance:ticket:{KEY}"
        longest = ctx.rules.longest_delay()          # a ticket outlives its longest timer by the retention
        assert 3600 + longest - 60 < redis.ttl(key) <= 3600 + longest
        redis.expire(key, 10)
        deliver(ctx, move(jira, KEY, "Open"), "d2")
        assert redis.ttl(key) > 3600 + longest - 60
        assert redis.ttl(f"relance:audit:{KEY}") > 3600 + longest - 60
    finally:
        process_context.use(None)
