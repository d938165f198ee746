"""The operator's dashboard, through Flask's test client against a real Redis: pages, actions, refusals."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from webhooks import create_app
from workers.stores.audit import Audit
from workers.context import Context
from workers.failures import TIMER_FUNC, FailureStore
from workers.stores.queue import make_queue
from workers.stores.timers import TimerStore, job_id
from workers.worker import run_worker

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"
AUTH = {"Authorization": "Basic " + base64.b64encode(b"operator:op-secret").decode()}
SAME_SITE = {**AUTH, "Origin": "http://localhost"}
PAGES = ["/operator/", "/operator/tickets/TES-4", "/operator/timers", "/operator/failures", "/operator/deliveries",
         "/operator/tickets?key=TES-4"]
ACTIONS = ["/operator/timers/run", "/operator/timers/cancel", "/operator/failures/retry",
           "/operator/failures/retry-all"]


@pytest.fixture
def op_settings(settings):
    return settings.replace(operator_password="op-secret")


@pytest.fixture
def client(op_settings):
    return create_app(op_settings).test_client()


def token(client, page="/operator/timers", headers=AUTH):
    """The form token of a page (there is one on every page with a button)."""
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(page, headers=headers).get_data(as_text=True))[1]


def resolved_ticket(client, op_settings, redis):
    """TES-4 goes through the edge and a worker (dry run): a delivery, a transition, a timer, effects."""
    body = (EXAMPLES / "waiting-for-feedback.json").read_bytes()
    assert client.post("/webhooks/jira", data=body, headers={"Content-Type": "application/json",
                                                              "X-Atlassian-Webhook-Identifier": "d-1"}).status_code == 202
    body = json.loads((EXAMPLES / "resolved.json").read_text())
    body["timestamp"] = int(time.time() * 1000)
    assert client.post("/webhooks/jira", json=body, headers={"X-Atlassian-Webhook-Identifier": "d-2"}).status_code == 202
    from workers import context as process_context
    ctx = Context.build(op_settings, redis)
    process_context.use(ctx)
    try:
        run_worker(ctx, burst=True)
    finally:
        process_context.use(None)


def test_home_shows_counts_and_recent_tickets(client, op_settings, redis):
    resolved_ticket(client, op_settings, redis)
    page = client.get("/operator/", headers=AUTH).get_data(as_text=True)
    assert re.search(r'id="count-timers">\d+<', page) and 'id="count-failures">0<' in page
    assert 'href="/operator/tickets/TES-4"' in page
    assert 'name="key"' in page


def test_search_by_key_opens_the_ticket_and_refuses_what_is_no_key(client):
    response = client.get("/operator/tickets?key=tes-4", headers=AUTH)
    assert response.status_code == 302 and response.location.endswith("/operator/tickets/TES-4")
    assert client.get("/operator/tickets?key=not a key", headers=AUTH).status_code == 404
    assert client.get("/operator/tickets/<script>", headers=AUTH).status_code == 404
    assert client.get("/operator/tickets/TES-4x", headers=AUTH).status_code == 404


def test_the_ticket_page_shows_the_timeline_newest_first_and_its_timers(client, op_settings, redis):
    resolved_ticket(client, op_settings, redis)
    page = client.get("/operator/tickets/TES-4", headers=AUTH).get_data(as_text=True)
    kinds = re.findall(r'data-kind="([^"]+)"', page)
    assert "delivery" in kinds and "transition" in kinds and "timer armed" in kinds and "effect done" in kinds
    assert kinds.index("effect done") < kinds.index("delivery")          # newest first
    assert "transition: Waiting for feedback → Resolved" in page or "→ Resolved" in page
    assert "email done · resolved-notice" in page
    assert "jane" in page.lower() or "@" in page                          # the email's recipients
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ">', page)
    assert 'data-rule="auto-close"' in page and "in 5 days" in page     # the pending timer, relative


def test_the_timeline_is_paginated(client, redis, op_settings):
    audit = Audit(redis)
    for i in range(250):
        audit.record("SUP-9", "rule skipped", rule=f"r{i}", why=f"because {i}")
    page = client.get("/operator/tickets/SUP-9", headers=AUTH).get_data(as_text=True)
    assert page.count('data-kind="rule skipped"') == 100 and "because 249" in page and "because 149" not in page
    older = re.search(r'href="(/operator/tickets/SUP-9\?before=[^"]+)"', page)[1].replace("&amp;", "&")
    page2 = client.get(older, headers=AUTH).get_data(as_text=True)
    assert page2.count('data-kind="rule skipped"') == 100 and "because 149" in page2 and "because 249" not in page2
    page3 = client.get(re.search(r'href="(/operator/tickets/SUP-9\?before=[^"]+)"', page2)[1], headers=AUTH)
    assert page3.get_data(as_text=True).count('data-kind="rule skipped"') == 50
    assert "older" not in page3.get_data(as_text=True).split("pager")[-1]


def test_timers_page_lists_pending_timers_with_actions(client, redis):
    TimerStore(redis).arm("auto-close", "SUP-2", time.time() + 2 * 86400 + 60, "g1")
    page = client.get("/operator/timers", headers=AUTH).get_data(as_text=True)
    assert 'data-ticket="SUP-2"' in page and "auto-close" in page and "in 2 days" in page
    assert "Run now" in page and "Cancel" in page


def test_run_now_makes_the_same_generation_due_and_says_who(client, redis):
    timers = TimerStore(redis)
    timers.arm("auto-close", "SUP-2", time.time() + 86400, "g1")
    response = client.post("/operator/timers/run", headers=SAME_SITE, data={
        "csrf_token": token(client), "rule": "auto-close", "ticket": "SUP-2", "generation": "g1"})
    assert response.status_code == 303
    pending = timers.get("auto-close", "SUP-2")
    assert pending.generation == "g1" and pending.due <= time.time()
    assert timers.claim(time.time()) == [("auto-close|SUP-2", "g1", pending.due)]
    entry = Audit(redis).timeline("SUP-2")[-1]
    assert entry["kind"] == "timer run now" and entry["by"] == "operator"


def test_run_now_of_a_re_armed_timer_does_nothing(client, redis):
    timers = TimerStore(redis)
    timers.arm("auto-close", "SUP-2", time.time() + 86400, "g2")
    client.post("/operator/timers/run", headers=SAME_SITE, data={
        "csrf_token": token(client), "rule": "auto-close", "ticket": "SUP-2", "generation": "g1"})
    assert timers.get("auto-close", "SUP-2").due > time.time() + 3600
    assert Audit(redis).timeline("SUP-2") == []


def test_run_now_of_a_timer_whose_job_gave_up_says_to_retry_it(client, redis):
    timers = TimerStore(redis)
    timers.arm("auto-close", "SUP-3", time.time() + 86400, "g1")
    FailureStore(redis).record(job_id("auto-close|SUP-3", "g1"), TIMER_FUNC, ("auto-close|SUP-3", "g1", 1.0),
                               "SUP-3", "JiraUnavailable", 9)
    response = client.post("/operator/timers/run", headers=SAME_SITE, data={
        "csrf_token": token(client), "rule": "auto-close", "ticket": "SUP-3", "generation": "g1"})
    assert "retry it on the Failures page" in unquote(response.location)
    assert timers.get("auto-close", "SUP-3").due > time.time() + 3600


def test_cancel_removes_the_timer_and_says_who(client, redis):
    timers = TimerStore(redis)
    timers.arm("auto-close", "SUP-2", time.time() + 86400, "g1")
    response = client.post("/operator/timers/cancel", headers=SAME_SITE, data={
        "csrf_token": token(client), "rule": "auto-close", "ticket": "SUP-2", "next": "/operator/tickets/SUP-2"})
    assert response.status_code == 303 and response.location.startswith("/operator/tickets/SUP-2?done=")
    assert timers.get("auto-close", "SUP-2") is None and timers.count() == 0
    entry = Audit(redis).timeline("SUP-2")[-1]
    assert entry["kind"] == "timer cancelled" and entry["by"] == "operator"


def failure(redis, job="timer-abc-g1", ticket="SUP-3"):
    FailureStore(redis).record(job, TIMER_FUNC, ("auto-close|" + ticket, "g1", 1.0), ticket,
                               "JiraUnavailable: 503 from JIRA", 9)


def test_failures_page_shows_reason_ticket_rule_attempts(client, redis):
    failure(redis)
    page = client.get("/operator/failures", headers=AUTH).get_data(as_text=True)
    assert "JiraUnavailable: 503 from JIRA" in page and "SUP-3" in page and "rule auto-close" in page
    assert '<td data-label="Attempts">9</td>' in page and "Retry all (1)" in page


def test_retry_queues_the_work_again_and_forgets_the_failure(client, redis):
    failure(redis)
    form_token = token(client, "/operator/failures")
    response = client.post("/operator/failures/retry", headers=SAME_SITE,
                           data={"csrf_token": form_token, "job": "timer-abc-g1"})
    assert response.status_code == 303
    assert FailureStore(redis).count() == 0
    jobs = make_queue(redis).get_jobs()
    assert [j.func_name for j in jobs] == [TIMER_FUNC] and jobs[0].args[0] == "auto-close|SUP-3"
    entry = Audit(redis).timeline("SUP-3")[-1]
    assert entry["kind"] == "retried" and entry["by"] == "operator"
    # Again: nothing left to retry, nothing queued twice.
    client.post("/operator/failures/retry", headers=SAME_SITE, data={"csrf_token": form_token, "job": "timer-abc-g1"})
    assert len(make_queue(redis).get_jobs()) == 1


def test_after_an_action_the_page_says_what_was_done_once(client, redis):
    TimerStore(redis).arm("auto-close", "SUP-2", time.time() + 86400, "g1")
    response = client.post("/operator/timers/cancel", headers=SAME_SITE, data={
        "csrf_token": token(client), "rule": "auto-close", "ticket": "SUP-2",
        "next": "/operator/timers?offset=100&done=an%20older%20note"})
    assert response.location == "/operator/timers?offset=100&done=timer%20auto-close%20of%20SUP-2%20cancelled"
    for outside in ("https://evil.example/", "//evil.example/operator/", "/webhooks/jira"):
        TimerStore(redis).arm("auto-close", "SUP-2", time.time() + 86400, "g1")
        response = client.post("/operator/timers/cancel", headers=SAME_SITE, data={
            "csrf_token": token(client), "rule": "auto-close", "ticket": "SUP-2", "next": outside})
        assert response.location.startswith("/operator/timers?done=")


def test_retry_all(client, redis):
    for i in range(3):
        failure(redis, job=f"timer-{i}-g1", ticket=f"SUP-{i + 10}")
    client.post("/operator/failures/retry-all", headers=SAME_SITE, data={"csrf_token": token(client, "/operator/failures")})
    assert FailureStore(redis).count() == 0 and len(make_queue(redis).get_jobs()) == 3


def test_deliveries_page_shows_each_verdict_and_why(client, op_settings, redis):
    resolved_ticket(client, op_settings, redis)
    client.post("/webhooks/jira", data=(EXAMPLES / "resolved.json").read_bytes(),
                headers={"Content-Type": "application/json", "X-Atlassian-Webhook-Identifier": "d-2"})
    client.post("/webhooks/jira", json={"webhookEvent": "jira:version_created"})
    client.post("/webhooks/jira", data=b"{nope", headers={"Content-Type": "application/json"})
    page = client.get("/operator/deliveries", headers=AUTH).get_data(as_text=True)
    verdicts = re.findall(r'<span class="tag (\w+)">', page)
    assert verdicts == ["rejected", "ignored", "duplicate", "queued", "queued"]
    assert "no rule reads jira:version_created events" in page and "malformed JSON" in page
    assert 'href="/operator/tickets/TES-4"' in page
    assert 0 < redis.ttl("relance:deliveries:log") <= op_settings.retention


def test_every_key_the_dashboard_writes_expires(client, op_settings, redis):
    resolved_ticket(client, op_settings, redis)
    for key in redis.scan_iter("relance:*"):
        if key not in (b"relance:timers", b"relance:timers:gen"):
            assert redis.ttl(key) > 0, key


# -- refusals ---------------------------------------------------------------------

@pytest.mark.parametrize("path", PAGES + ACTIONS)
def test_closed_without_a_password(settings, path):
    c = create_app(settings).test_client()
    response = c.post(path, headers=SAME_SITE) if path in ACTIONS else c.get(path, headers=AUTH)
    assert response.status_code == 403


@pytest.mark.parametrize("path", PAGES + ACTIONS)
@pytest.mark.parametrize("auth", [None, "operator:wrong", "admin:op-secret"])
def test_every_page_and_action_needs_the_credentials(client, redis, path, auth):
    TimerStore(redis).arm("auto-close", "SUP-2", time.time() + 86400, "g1")
    failure(redis)
    headers = {"Origin": "http://localhost"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    if path in ACTIONS:
        response = client.post(path, headers=headers, data={"csrf_token": token(client), "rule": "auto-close",
                                                            "ticket": "SUP-2", "generation": "g1", "job": "timer-abc-g1"})
    else:
        response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert TimerStore(redis).get("auto-close", "SUP-2") is not None and FailureStore(redis).count() == 1


@pytest.mark.parametrize("path", ACTIONS)
@pytest.mark.parametrize("case", ["no token", "bad token", "other site", "no origin", "referer elsewhere",
                                  "token of another password"])
def test_a_post_without_a_valid_token_or_from_another_site_is_403_and_changes_nothing(client, op_settings, redis,
                                                                                       path, case):
    TimerStore(redis).arm("auto-close", "SUP-2", time.time() + 86400, "g1")
    failure(redis)
    good = token(client)
    headers, data = dict(SAME_SITE), {"rule": "auto-close", "ticket": "SUP-2", "generation": "g1",
                                      "job": "timer-abc-g1", "csrf_token": good}
    if case == "no token":
        del data["csrf_token"]
    elif case == "bad token":
        data["csrf_token"] = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    elif case == "other site":
        headers["Origin"] = "https://evil.example"
    elif case == "no origin":
        del headers["Origin"]
    elif case == "referer elsewhere":
        del headers["Origin"]
        headers["Referer"] = "https://evil.example/operator/timers"
    elif case == "token of another password":
        other = create_app(op_settings.replace(operator_password="other")).test_client()
        data["csrf_token"] = token(other, headers={"Authorization": "Basic " + base64.b64encode(b"operator:other").decode()})
    response = client.post(path, headers=headers, data=data)
    assert response.status_code == 403
    assert TimerStore(redis).get("auto-close", "SUP-2").due > time.time() + 3600
    assert FailureStore(redis).count() == 1 and make_queue(redis).get_jobs() == []
    assert Audit(redis).timeline("SUP-2") == []


def test_a_same_site_referer_is_enough_without_origin(client, redis):
    TimerStore(redis).arm("auto-close", "SUP-2", time.time() + 86400, "g1")
    headers = {**AUTH, "Referer": "http://localhost/operator/timers"}
    response = client.post("/operator/timers/cancel", headers=headers,
                           data={"csrf_token": token(client), "rule": "auto-close", "ticket": "SUP-2"})
    assert response.status_code == 303 and TimerStore(redis).count() == 0


def test_an_email_effect_opens_the_email_as_sent(op_settings, redis, client, jira):
    from tests.jira_events import move
    from tests.support import deliver
    from workers import context as process_context
    ctx = Context.build(op_settings, redis)                    # dry run: mail to the outbox
    process_context.use(ctx)
    try:
        deliver(ctx, move(jira, "SUP-1", "Waiting for feedback", cloud=False), "d-sent")
    finally:
        process_context.use(None)
    page = client.get("/operator/tickets/SUP-1", headers=AUTH).get_data(as_text=True)
    [link] = re.findall(r'href="(/operator/sent/[^"]+)">open the email as sent', page)
    shown = client.get(link, headers=AUTH)
    assert shown.status_code == 200
    body = shown.get_data(as_text=True)
    assert "jane@customer.example" in body and "<iframe" in body and " sandbox " in body
    assert "<h1>[SUP-1] We need your feedback: Login fails" in body         # the subject, as sent
    assert "&lt;script&gt;" in body and "<script>alert(1)" not in body        # the summary stays text
    assert client.get(link).status_code == 401
    assert client.get("/operator/sent/nope:x:0", headers=AUTH).status_code == 404


def test_a_delivery_refused_for_its_size_is_on_the_deliveries_page(client, redis):
    assert client.post("/webhooks/jira", data=b"{" + b" " * (1024 * 1024 + 10) + b"}",
                       content_type="application/json").status_code == 413
    page = client.get("/operator/deliveries", headers=AUTH).get_data(as_text=True)
    assert "413" in page and "rejected" in page


def test_a_parked_timer_is_marked_on_the_timers_and_ticket_pages(client, redis):
    timers = TimerStore(redis)
    timers.arm("auto-close", "SUP-3", time.time() + 90 * 86400, "g1")       # parked: its job gave up
    timers.arm("auto-close", "SUP-4", time.time() + 86400, "g2")            # a plain pending timer
    FailureStore(redis).record(job_id("auto-close|SUP-3", "g1"), TIMER_FUNC, ("auto-close|SUP-3", "g1", 1.0),
                               "SUP-3", "JiraUnavailable", 10)
    page = client.get("/operator/timers", headers=AUTH).get_data(as_text=True)
    rows = re.findall(r'<tr class="timer" data-rule="auto-close" data-ticket="(SUP-\d)">(.*?)</tr>', page, re.S)
    marked = {ticket: "parked: its job gave up" in row for ticket, row in rows}
    assert marked == {"SUP-3": True, "SUP-4": False}
    assert "parked: its job gave up" in client.get("/operator/tickets/SUP-3", headers=AUTH).get_data(as_text=True)


def test_a_rule_whose_effect_was_refused_is_on_the_failures_page_with_its_rule(client, redis):
    from workers.failures import RULE_FUNC
    FailureStore(redis).record("effect-d1-auto-close", RULE_FUNC, ("d1", "auto-close", "SUP-5"), "SUP-5",
                               "transition failed: no transition of SUP-5 leads to 'Closed'", 1)
    page = client.get("/operator/failures", headers=AUTH).get_data(as_text=True)
    assert "effect · rule auto-close" in page and "SUP-5" in page and "leads to &#39;Closed&#39;" in page
