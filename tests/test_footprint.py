"""bench/footprint.py's model of Redis memory holds only if it knows every key relance writes: each key of
a ticket's whole life (through the web edge, the worker, a timer, a failure) falls in a family whose bound
the benchmark states."""

from __future__ import annotations

import json
import time

from rq import Retry

from bench.footprint import FAMILIES, family
from tests.jira_events import move
from tests.support import KEY, accept, fire_due
from webhooks import create_app
from workers.worker import run_worker


def test_every_key_of_a_tickets_life_is_in_a_family_of_the_footprint_model(service, jira, settings):
    edge = create_app(settings).test_client()       # dry run: the edge's own keys (delivery log, metrics)
    for did, status in (("d1", "Waiting for feedback"), ("d2", "Resolved")):
        response = edge.post("/webhooks/jira", data=json.dumps(move(jira, KEY, status)),
                             headers={"X-Atlassian-Webhook-Identifier": did}, content_type="application/json")
        assert response.status_code == 202
    run_worker(service, burst=True)
    fire_due(service, time.time() + 6 * 86400)                      # auto-close: transition + email
    jira.add_issue("SUP-2", status="Resolved", reporter="acc-jane")
    jira.fail_next(2, status=503, retry_after=None, path_contains="/issue/SUP-2", method="GET")
    accept(service, move(jira, "SUP-2", "Reopened"), "d3", retry=Retry(max=1, interval=[0]))
    run_worker(service, burst=True)                                 # gives up: a failure record
    assert service.failures.count() == 1

    keys = sorted(k.decode() for k in service.redis.scan_iter("*"))
    families = {family(k) for k in keys}
    assert [k for k in keys if family(k) == "other"] == []
    assert {"ticket memory", "timeline", "delivery bodies", "delivery done marks (dedupe)", "ledger entries",
            "emails kept as sent", "RQ job records", "failures", "delivery log (dashboard)"} <= families
    assert families <= set(FAMILIES)
