"""Reconcile: tickets whose webhooks were lost are repaired from what JIRA shows."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.jira_events import move, webhook_body
from tests.standins import JiraStandIn
from tests.standins.jira import CONTRACT, contract_validator
from tests.support import KEY, deliver, fire_due, kinds, sent
from workers.stores.audit import Audit
from workers.clients.jira import JiraClient
from workers.reconcile import Reconciler, jql_for, reconcile, reconcile_locked
from workers.worker import run_worker


def hours_ago(n: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(hours=n)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def reconciled(ctx, key=KEY):
    return [e for e in Audit(ctx.redis).timeline(key) if e["kind"] == "reconciled"]


def test_a_ticket_resolved_while_no_webhook_arrived_gets_its_auto_close_timer_from_the_resolution(
        service, jira, sendgrid):
    four_hours_ago = int(time.time() * 1000) - 4 * 3600_000
    deliver(service, move(jira, KEY, "In Progress", ts_ms=four_hours_ago), "d1")   # relance knows it In Progress
    resolved_at = datetime.now(timezone.utc) - timedelta(hours=3)
    jira.set_status(KEY, "Resolved", at=resolved_at)               # ... then the webhook is lost
    assert service.timers.get("auto-close", KEY) is None

    report = reconcile(service)
    assert report.fed == [f"{KEY}: In Progress -> Resolved"]
    run_worker(service, burst=True)

    timer = service.timers.get("auto-close", KEY)
    assert timer.due == pytest.approx(resolved_at.timestamp() + 5 * 86400, abs=0.01)
    assert service.timers.get("support-silence", KEY) is None        # it left open: cancelled
    [entry] = reconciled(service)
    assert (entry["from"], entry["to"]) == ("In Progress", "Resolved")
    assert "relance remembered 'In Progress'" in entry["why"]
    assert service.tickets.memory(KEY).state == "resolved"
    assert len(sent(sendgrid, "resolved_notice")) == 1              # what the lost webhook would have sent
    # Run again: consistent now, nothing more fed.
    again = reconcile(service)
    assert (again.fed, again.armed, again.consistent) == ([], [], 1)
    assert fire_due(service, timer.due) == 1
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Closed"


def test_a_ticket_reopened_while_relance_thought_it_resolved_gets_its_timer_cancelled(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Resolved", ts_ms=ms(hours_ago(2))), "d1")
    assert service.timers.get("auto-close", KEY) is not None
    jira.set_status(KEY, "Reopened", at=hours_ago(1))              # webhook lost
    report = reconcile(service)
    assert report.fed == [f"{KEY}: Resolved -> Reopened"]
    run_worker(service, burst=True)
    assert service.timers.get("auto-close", KEY) is None
    assert "timer cancelled" in kinds(service)
    assert service.tickets.memory(KEY).status == "Reopened"


def test_a_consistent_ticket_is_left_alone_and_a_recent_change_waits_for_its_webhook(service, jira, sendgrid):
    jira.set_status(KEY, "Resolved", at=hours_ago(1))
    deliver(service, webhook_body(jira, KEY, "In Progress", "Resolved", ts_ms=ms(hours_ago(1))), "d1")
    before = Audit(service.redis).timeline(KEY)
    timer = service.timers.get("auto-close", KEY)
    report = reconcile(service)
    assert (report.seen, report.consistent, report.fed, report.armed) == (1, 1, [], [])
    assert Audit(service.redis).timeline(KEY) == before
    assert service.timers.get("auto-close", KEY) == timer
    assert not service.queue.job_ids
    jira.set_status(KEY, "Reopened")                                # just now: JIRA may still be retrying
    report = reconcile(service)
    assert (report.recent, report.fed) == (1, [])
    assert service.timers.get("auto-close", KEY) == timer


def test_a_lost_timer_is_armed_from_when_the_ticket_entered_the_state_but_not_one_that_fired(
        service, jira, sendgrid):
    t0 = ms(hours_ago(1))
    jira.set_status(KEY, "Resolved", at=hours_ago(1))
    deliver(service, webhook_body(jira, KEY, "In Progress", "Resolved", ts_ms=t0), "d1")
    service.timers.cancel("auto-close", KEY)                        # lost (an old Redis backup, say)
    report = reconcile(service)
    assert report.armed == [f"{KEY}: auto-close"]
    assert service.timers.get("auto-close", KEY).due == pytest.approx(t0 / 1000 + 5 * 86400)
    assert reconciled(service)[-1]["rule"] == "auto-close"

    # A timer whose story is over since the ticket entered the state is not armed again.
    service.timers.cancel("auto-close", KEY)
    Audit(service.redis).record(KEY, "timer fired", rule="auto-close", generation="g")
    assert reconcile(service).armed == []
    assert service.timers.get("auto-close", KEY) is None


def test_reconcile_pages_through_many_tickets_on_cloud(service, jira, sendgrid):
    jira.set_status(KEY, "In Progress", at=hours_ago(1))
    for n in range(2, 8):
        jira.add_issue(f"SUP-{n}", status="Resolved", reporter="acc-jane", created=hours_ago(1))
    report = reconcile(service, 7 * 86400)
    assert report.seen == 7
    searches = [r for r in jira.requests if r.path == "/rest/api/3/search/jql"]
    assert len(searches) == 1                                         # 100 a page: one page
    small = JiraClient(jira.url, jira.email, jira.api_token)
    keys = [i["key"] for i in small.search(jql_for(service.rules, 86400), ["status", "updated"], page_size=3)]
    assert keys == [f"SUP-{n}" for n in range(1, 8)]
    pages = [r for r in jira.requests if r.path == "/rest/api/3/search/jql"][1:]
    assert len(pages) == 3
    assert "nextPageToken" not in pages[0].json and pages[1].json["nextPageToken"]
    assert not [r for r in jira.requests if r.path == "/rest/api/2/search"]
    assert len(report.fed) == 7                                        # none known to relance


def test_data_center_search_with_a_pat_and_the_fallback_from_cloud_search_on_404():
    with JiraStandIn(pat="dc-pat") as dc:
        for n in range(1, 6):
            dc.add_issue(f"DC-{n}", status="Open")
        dc.add_issue("DC-9", status="Open", created=datetime.now(timezone.utc) - timedelta(days=30))
        jql = 'status in ("Open") AND updated >= "-7d" ORDER BY key ASC'
        with_pat = JiraClient(dc.url, pat="dc-pat")
        assert [i["key"] for i in with_pat.search(jql, ["status"], page_size=2)] == [f"DC-{n}" for n in range(1, 6)]
        assert {r.path for r in dc.requests} == {"/rest/api/2/search"}
        assert [r.json["startAt"] for r in dc.requests] == [0, 2, 4]
    with JiraStandIn(search_api="datacenter") as dc_basic:
        dc_basic.add_issue("DC-1", status="Open")
        client = JiraClient(dc_basic.url, dc_basic.email, dc_basic.api_token)
        assert [i["key"] for i in client.search(jql, ["status"])] == ["DC-1"]
        assert [i["key"] for i in client.search(jql, ["status"])] == ["DC-1"]   # remembers: no second 404
        assert [(r.path, r.status) for r in dc_basic.requests] == [
            ("/rest/api/3/search/jql", 404), ("/rest/api/2/search", 200), ("/rest/api/2/search", 200)]


def test_search_answers_match_the_published_schemas_and_cloud_old_search_is_gone(jira):
    import requests
    jira.add_issue("SUP-2", status="Resolved")
    auth = (jira.email, jira.api_token)
    body = {"jql": 'status in ("Resolved", "In Progress") AND updated >= "-60m"', "maxResults": 1,
            "fields": ["status", "updated"]}
    first = requests.post(f"{jira.url}/rest/api/3/search/jql", json=body, auth=auth).json()
    last = requests.post(f"{jira.url}/rest/api/3/search/jql", auth=auth,
                         json={**body, "nextPageToken": first["nextPageToken"]}).json()
    assert (first["isLast"], last["isLast"], "nextPageToken" in last) == (False, True, False)
    schema = contract_validator(CONTRACT["operations"]["searchAndReconsileIssuesUsingJqlPost"]["response"]["schema"])
    for page in (first, last):
        assert not [e.message for e in schema.iter_errors(page)]
    gone = requests.post(f"{jira.url}/rest/api/2/search", json={"jql": body["jql"]}, auth=auth)
    assert gone.status_code == 410 and "/rest/api/3/search/jql" in gone.json()["errorMessages"][0]
    bad = requests.post(f"{jira.url}/rest/api/3/search/jql", json={"jql": "x", "maxResults": "many"}, auth=auth)
    assert bad.status_code == 400
    with JiraStandIn(pat="p") as dc:
        dc.add_issue("DC-1", status="Open")
        page = requests.post(f"{dc.url}/rest/api/2/search", headers={"Authorization": "Bearer p"},
                             json={"jql": 'status in ("Open") AND updated >= "-60m"', "fields": ["status"]}).json()
        assert (page["total"], page["issues"][0]["key"]) == (1, "DC-1")
        v2 = contract_validator(CONTRACT["operations"]["searchForIssuesUsingJqlPost"]["response"]["schema"])
        assert not [e.message for e in v2.iter_errors(page)]


def test_dry_run_has_nothing_to_reconcile(settings, redis):
    from workers.context import Context
    ctx = Context.build(settings, redis)
    assert reconcile(ctx).lines() == ["nothing to reconcile: JIRA is not configured (dry run)"]


def test_only_one_worker_reconciles_at_a_time_and_a_failure_does_not_stop_the_thread(service, jira, sendgrid):
    lock = service.redis.lock("relance:reconcile:lock", timeout=30)
    assert lock.acquire(blocking=False)
    assert reconcile_locked(service) is None
    lock.release()
    jira.fail_next(count=50, status=503, path_contains="/search")
    thread = Reconciler(service, interval=0.05)
    thread.start()
    try:
        deadline = time.time() + 5
        while thread.runs < 3 and time.time() < deadline:
            time.sleep(0.02)
        assert thread.runs >= 3 and thread.is_alive()
    finally:
        thread.stop()
        thread.join(2)


def test_the_worker_reconciles_at_start_up_and_not_in_a_dry_run(service, jira, sendgrid, settings, redis):
    from workers.context import Context
    from workers.worker import start_reconciler
    assert start_reconciler(Context.build(settings, redis)) is None         # dry run: no thread
    jira.set_status(KEY, "Resolved", at=hours_ago(2))
    thread = start_reconciler(service)
    try:
        deadline = time.time() + 5
        while not service.queue.job_ids and time.time() < deadline:
            time.sleep(0.02)
        assert service.queue.job_ids and service.queue.job_ids[0].startswith("delivery-reconcile-")
    finally:
        thread.stop()
        thread.join(2)
    run_worker(service, burst=True)
    assert service.timers.get("auto-close", KEY).due == pytest.approx(hours_ago(2).timestamp() + 5 * 86400, abs=2)
    assert [e["kind"] for e in reconciled(service)] == ["reconciled"]


def test_a_timed_rule_that_wants_a_move_by_someone_is_not_armed_by_reconcile(settings, redis, jira, sendgrid,
                                                                              rules_file, tmp_path):
    from tests.conftest import service_context
    from workers import context as process_context
    by_support = tmp_path / "by-support.yaml"
    by_support.write_text(rules_file.read_text().replace(
        "  - name: auto-close\n    when: {entered: resolved}", "  - name: auto-close\n    when: {entered: resolved, by: support}"))
    ctx = service_context(settings.replace(rules_file=by_support), redis, jira, sendgrid)
    try:
        jira.set_status(KEY, "Resolved", at=hours_ago(1))
        deliver(ctx, webhook_body(jira, KEY, "In Progress", "Resolved", ts_ms=ms(hours_ago(1))), "d1")  # by Jane
        assert ctx.timers.get("auto-close", KEY) is None
        report = reconcile(ctx)
        assert (report.armed, report.consistent) == ([], 1)
        assert ctx.timers.get("auto-close", KEY) is None
    finally:
        process_context.use(None)
