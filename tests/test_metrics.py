"""GET /metrics: Prometheus text from counts kept in Redis, so every web process answers the same."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import payload
from tests.jira_events import move
from tests.support import KEY, deliver, fire_due
from webhooks import create_app


def samples(response) -> dict:
    """{(name, (label values...)): value} of a /metrics answer."""
    out = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_need_the_operator_unless_public(settings):
    closed = create_app(settings.replace(operator_password="op-pass")).test_client()
    assert closed.get("/metrics").status_code == 401
    assert closed.get("/metrics", auth=("operator", "op-pass")).status_code == 200
    public = create_app(settings.replace(metrics_public=True)).test_client()
    assert public.get("/metrics").status_code == 200


def test_two_web_processes_count_the_same_deliveries(settings, redis):
    first = create_app(settings.replace(metrics_public=True)).test_client()
    second = create_app(settings.replace(metrics_public=True)).test_client()
    headers = {"X-Atlassian-Webhook-Identifier": "m-1"}
    assert first.post("/webhooks/jira", json=payload("02"), headers=headers).status_code == 202
    assert second.post("/webhooks/jira", json=payload("02"), headers=headers).status_code == 200   # duplicate
    assert first.post("/webhooks/jira", data=b"{not json", content_type="application/json").status_code == 400
    a, b = samples(first.get("/metrics")), samples(second.get("/metrics"))
    assert a == b
    assert a[("relance_deliveries_total", (("verdict", "queued"),))] == 1
    assert a[("relance_deliveries_total", (("verdict", "duplicate"),))] == 1
    assert a[("relance_deliveries_total", (("verdict", "rejected"),))] == 1
    assert a[("relance_queue_depth", ())] == 1


def test_effects_timers_and_remote_latency_are_measured(service, jira, sendgrid, settings):
    t0 = int(time.time() * 1000) - 6 * 86400_000
    deliver(service, move(jira, KEY, "Resolved", ts_ms=t0), "d1")
    assert samples_of(settings)[("relance_timers_pending", ())] >= 1
    timer = service.timers.get("auto-close", KEY)
    fire_due(service, time.time())
    got = samples_of(settings)
    assert got[("relance_effects_total", (("action", "email"), ("outcome", "done")))] == 2
    assert got[("relance_effects_total", (("action", "transition"), ("outcome", "done")))] == 1
    late = got[("relance_timer_lateness_seconds_sum", ())]
    assert got[("relance_timer_lateness_seconds_count", ())] == 1 and late >= time.time() - timer.due - 60
    assert got[("relance_remote_seconds_count", (("service", "jira"),))] >= 3
    assert got[("relance_remote_seconds_count", (("service", "sendgrid"),))] == 2


def samples_of(settings):
    return samples(create_app(settings.replace(metrics_public=True)).test_client().get("/metrics"))
