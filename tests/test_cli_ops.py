"""`relance timeline`, `relance timers` and `relance reconcile`: output and exit codes."""

import re
import time

from relance.embedded import free_port
from tests.test_cli import relance
from workers.stores.audit import Audit
from workers.failures import FailureStore
from workers.stores.timers import TimerStore, job_id, member


def test_timeline_prints_one_line_per_entry_with_its_utc_time_kind_and_fields(redis_server, redis):
    audit = Audit(redis)
    audit.record("SUP-7", "delivery", delivery="d1", status="Resolved", outcome="entered resolved")
    audit.record("SUP-7", "timer armed", rule="auto-close", due_ms=1_800_000_000_000, generation="abc")
    result = relance("timeline", "sup-7", env={"REDIS_URL": redis_server.url})
    assert result.returncode == 0, result.stderr
    [first, second] = result.stdout.strip().splitlines()
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  delivery ", first)
    assert "delivery=d1 status=Resolved outcome=entered resolved" in first
    assert "timer armed" in second and "rule=auto-close due_ms=1800000000000 generation=abc" in second


def test_timeline_of_an_unknown_ticket_or_a_bad_key_exits_non_zero(redis_server, redis):
    unknown = relance("timeline", "SUP-404", env={"REDIS_URL": redis_server.url})
    assert unknown.returncode == 1 and "no timeline for SUP-404" in unknown.stderr
    bad = relance("timeline", "../etc", env={"REDIS_URL": redis_server.url})
    assert bad.returncode == 2 and "not a JIRA issue key" in bad.stderr


def test_timers_lists_pending_timers_with_due_times_and_marks_parked_ones(redis_server, redis):
    timers = TimerStore(redis)
    now = time.time()
    timers.arm("auto-close", "SUP-1", now + 2 * 86400 + 60, "gen1")
    timers.arm("reminder", "SUP-2", now - 200, "gen2")
    timers.arm("reminder", "SUP-3", now + 80 * 86400, "gen3")
    FailureStore(redis).record(job_id(member("reminder", "SUP-3"), "gen3"), "workers.jobs.fire_timer",
                               [member("reminder", "SUP-3"), "gen3", now], "SUP-3", "JiraError: 403", 10)
    env = {"REDIS_URL": redis_server.url}
    result = relance("timers", env=env)
    assert result.returncode == 0, result.stderr
    [header, late, soon, parked] = result.stdout.strip().splitlines()
    assert header.split()[:3] == ["TICKET", "RULE", "DUE"]
    assert late.split()[:2] == ["SUP-2", "reminder"] and "3 minutes ago" in late and "gen2" in late
    assert soon.split()[:2] == ["SUP-1", "auto-close"] and "in 2 days" in soon
    assert "parked" in parked and "relance retry" in parked

    one = relance("timers", "SUP-1", env=env)
    assert one.returncode == 0 and len(one.stdout.strip().splitlines()) == 2 and "SUP-1" in one.stdout
    none = relance("timers", "SUP-9", env=env)
    assert none.returncode == 0 and none.stdout.strip() == "no pending timers for SUP-9"


def test_timeline_and_timers_without_redis_exit_3():
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    for args in (("timeline", "SUP-1"), ("timers",)):
        down = relance(*args, env=env)
        assert down.returncode == 3 and "Redis unavailable" in down.stderr


def test_reconcile_without_jira_says_so_plainly_and_exits_0(redis_server):
    result = relance("reconcile", env={"REDIS_URL": redis_server.url, "JIRA_BASE_URL": ""})
    assert result.returncode == 0
    assert result.stdout.strip() == "nothing to reconcile: JIRA is not configured (dry run)"


def test_reconcile_queues_the_missed_change_and_prints_what_it_did(redis_server, redis, jira):
    from workers.stores.queue import make_queue
    env = {"REDIS_URL": redis_server.url, "JIRA_BASE_URL": jira.url, "JIRA_USER_EMAIL": jira.email,
           "JIRA_API_TOKEN": jira.api_token}
    from datetime import datetime, timedelta, timezone
    jira.set_status("SUP-1", "Resolved", at=datetime.now(timezone.utc) - timedelta(hours=1))
    result = relance("reconcile", "--since", "2d", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["1 tickets seen in JIRA, 0 consistent with relance's memory, "
                                          "0 updated too recently (left for the next run)",
                                          "queued a status change: SUP-1: (unknown) -> Resolved"]
    [search] = [r for r in jira.requests if r.path == "/rest/api/3/search/jql"]
    assert search.json["jql"].endswith('AND updated >= "-2880m" ORDER BY key ASC')
    assert make_queue(redis).job_ids == [j for j in make_queue(redis).job_ids if j.startswith("delivery-reconcile-")]
    assert len(make_queue(redis).job_ids) == 1
    timeline = relance("timeline", "SUP-1", env=env)
    assert "reconciled" in timeline.stdout and "to=Resolved" in timeline.stdout

    bad = relance("reconcile", "--since", "soon", env=env)
    assert bad.returncode == 2 and "--since" in bad.stderr
    jira.fail_next(count=10, status=503, path_contains="/search")
    down = relance("reconcile", env=env)
    assert down.returncode == 1 and "JIRA" in down.stderr and "503" in down.stderr


def test_timers_marks_a_timer_whose_job_is_queued_as_firing(redis_server, redis):
    from workers.stores.queue import make_queue
    timers = TimerStore(redis)
    timers.arm("auto-close", "SUP-1", time.time() - 1, "gen1")
    assert timers.pump(make_queue(redis), time.time()) == 1
    result = relance("timers", "SUP-1", env={"REDIS_URL": redis_server.url})
    assert result.returncode == 0 and "firing" in result.stdout.splitlines()[1]
