"""Calls to JIRA and SendGrid share one budget in Redis across threads and worker processes: a 429's
Retry-After pauses every worker, and a configured rate paces them all. Real Redis; the stand-ins
answer 429 as JIRA Cloud and SendGrid do."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from tests.standins import JiraStandIn, SendGridStandIn
from workers.clients.jira import JiraClient
from workers.clients.mail import Message, SendGridMailer
from workers.exceptions import TransientError
from workers.stores.budget import RemoteBudget


def jira_client(jira, redis, rate=0.0):
    client = JiraClient(jira.url, jira.email, jira.api_token)
    client.budget = RemoteBudget(redis, "jira", rate)
    return client


def hammer(clients, calls_each, call) -> list[BaseException]:
    """Each client in a thread of its own makes ``calls_each`` calls; the errors raised."""
    errors = []

    def run(client):
        for _ in range(calls_each):
            try:
                call(client)
            except BaseException as e:
                errors.append(e)
    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def test_a_429_seen_by_one_worker_pauses_the_calls_of_every_other(redis, jira):
    first, other = jira_client(jira, redis), jira_client(jira, redis)      # two worker processes' clients
    jira.fail_next(1, status=429, retry_after=2, path_contains="/issue/SUP-1")
    paused, pause = threading.Event(), first.budget.pause
    first.budget.pause = lambda seconds: (pause(seconds), paused.set())     # tells the test when it has paused
    reading = threading.Thread(target=first.issue, args=("SUP-1",))
    reading.start()
    assert paused.wait(timeout=10)
    answered = time.monotonic()
    other.priorities()
    assert time.monotonic() - answered > 1.5          # the other waited out what the 429 asked of the first
    reading.join(timeout=10)
    assert [r.status for r in jira.requests if r.path.endswith("/issue/SUP-1")] == [429, 200]


def test_a_pause_longer_than_a_job_should_wait_fails_the_attempt_for_a_later_retry(redis, jira):
    client = jira_client(jira, redis)
    client.budget.pause(60)
    before = len(jira.requests)
    with pytest.raises(TransientError) as raised:
        client.priorities()
    assert raised.value.retry_after > 50
    assert len(jira.requests) == before                # nothing was sent


def test_a_configured_rate_paces_every_worker_together(redis):
    budget_a, budget_b = RemoteBudget(redis, "jira", rate=20), RemoteBudget(redis, "jira", rate=20)
    moments = []
    lock = threading.Lock()

    def call(budget):
        budget.before_call()
        with lock:
            moments.append(time.monotonic())
    errors = hammer([budget_a, budget_b] * 3, 4, call)          # 6 threads, 2 "processes", 24 calls
    assert errors == []
    moments.sort()
    assert moments[-1] - moments[0] >= 23 / 20 * 0.9            # 20 a second, all callers together


def test_after_a_429_every_worker_paces_its_calls_slower_than_before_it(redis):
    budget, other = RemoteBudget(redis, "jira"), RemoteBudget(redis, "jira")
    for _ in range(20):
        budget.before_call()                    # unpaced: 20 calls as fast as they come
    budget.pause(0.1)                           # then a 429
    moments = []
    for _ in range(6):
        other.before_call()
        moments.append(time.monotonic())
    gaps = [later - earlier for earlier, later in zip(moments, moments[1:])]
    assert min(gaps) >= 0.05                    # at most 80% of the 20 a second before the 429: >= 62.5 ms apart


@pytest.fixture
def limited_jira():
    """JIRA allowing 6 requests a second per endpoint (bursts of 6), answering 50 ms late."""
    with JiraStandIn(rate=6, burst=6, latency_ms=50) as server:
        server.add_user(account_id="acc-jane", email="jane@customer.example")
        server.add_issue("SUP-1", reporter="acc-jane")
        yield server


def read_then_think(client):
    """A job's pattern: a call to JIRA, then work of its own (here 0.4 s) before the next."""
    client.issue("SUP-1")
    threading.Event().wait(0.4)


def test_workers_sharing_a_budget_never_call_while_jira_asked_them_to_wait(redis, limited_jira):
    errors = hammer([jira_client(limited_jira, redis) for _ in range(6)], 4, read_then_think)
    assert errors == []
    stats = limited_jira.stats()
    assert stats["statuses"]["200"] == 24 and stats["rate_limited"] > 0     # the limit was met ...
    assert stats["ignored_retry_after"] == 0                                 # ... and honoured by all


def test_workers_waiting_each_for_its_own_429_call_while_jira_asked_to_wait(limited_jira):
    clients = [JiraClient(limited_jira.url, limited_jira.email, limited_jira.api_token) for _ in range(6)]
    hammer(clients, 4, read_then_think)         # no shared budget: each waits only when answered 429 itself
    assert limited_jira.stats()["ignored_retry_after"] > 0


def test_a_sendgrid_rate_limit_pauses_every_sender(redis):
    numbers = itertools.count()

    def send(mailer):
        n = next(numbers)
        mailer.send(Message(("jane@customer.example",), "Hello", "Hi", "<p>Hi</p>", f"e{n}", ticket=f"SUP-{n}"))
    with SendGridStandIn(rate=4, burst=4, latency_ms=20) as sendgrid:
        mailers = []
        for _ in range(4):
            mailer = SendGridMailer(sendgrid.api_key, sendgrid.url, "support@acme.example")
            mailer.budget = RemoteBudget(redis, "sendgrid")
            mailers.append(mailer)
        errors = hammer(mailers, 3, send)
        stats = sendgrid.stats()
    assert errors == []
    assert stats["statuses"]["202"] == 12 and stats["rate_limited"] > 0
    assert stats["ignored_retry_after"] == 0
    assert stats["tickets_by_messages"] == {"1": 12}


def test_a_429_after_a_few_calls_pauses_but_sets_no_pace(redis):
    budget = RemoteBudget(redis, "jira")
    budget.before_call()
    budget.pause(0.05)                          # one call, then a 429: about one issue's writes, say
    moments = []
    for _ in range(5):
        budget.before_call()
        moments.append(time.monotonic())
    assert moments[-1] - moments[0] < 0.2       # unpaced once the pause is over
