"""How every webhook route answers: JSON, with its verdict counted and added to the dashboard's
delivery log under its source (jira, inbound, events)."""

from __future__ import annotations

import logging

from flask import Flask, current_app, g
from redis.exceptions import RedisError

from workers.stores.views import log_delivery

log = logging.getLogger("relance.webhooks")

# The counter each source's verdicts go to (workers/stores/metrics.py COUNTERS), with its labels' prefix.
_COUNTER = {"jira": ("deliveries", ()), "inbound": ("mail_webhooks", ("inbound",)),
            "events": ("mail_webhooks", ("events",))}


def verdict(code: int, status: str | None) -> str:
    """The word a delivery's answer is counted and shown under."""
    return ("queued" if code == 202 else status or "accepted" if code < 300
            else "unavailable" if code >= 500 else "unauthorized" if code == 401 else "rejected")


def counter(source: str) -> tuple[str, ...]:
    """The counter a ``source``'s verdicts go to and its labels but the verdict (Metrics.count's arguments)."""
    name, labels = _COUNTER[source]
    return (name, *labels)


def answer(source: str, code: int, *, app: Flask | None = None, seen: dict | None = None, **body):
    """The JSON answer of a ``source`` route, counted by its verdict (JIRA's in relance_deliveries_total,
    SendGrid's in relance_mail_webhooks_total) and added to the dashboard's capped delivery log with
    the ticket and event the handler saw: one pipelined write, never failing the answer.

    ``app`` and ``seen`` (the ticket and event), for a handler running without Flask's contexts
    (webhooks.FastRoutes); by default the current app and what the handler put in ``g.webhook``.
    """
    said = verdict(code, body.get("status"))
    app = app or current_app
    edge = app.extensions["relance"]
    seen = g.get("webhook", {}) if seen is None else seen
    try:
        pipe = edge.redis.pipeline(transaction=False)
        if edge.metrics is not None:
            edge.metrics.count(*counter(source), said, pipe=pipe)
        log_delivery(pipe, edge.settings.retention, source=source, code=code, verdict=said,
                     ticket=seen.get("ticket"), event=seen.get("event"), delivery=body.get("delivery"),
                     reason=": ".join(filter(None, (body.get("error"), body.get("reason")))) or None)
        pipe.execute()
    except RedisError as e:
        log.debug("delivery verdict not logged: %s", e)
    return respond(app, code, body)


def respond(app: Flask, code: int, body: dict):
    """The JSON answer alone: what ``jsonify`` makes, without needing an app context."""
    response = app.json.response(body)
    response.status_code = code
    return response


def unavailable(source: str, retry_after: int, *, app: Flask | None = None, seen: dict | None = None, **body):
    """503 with Retry-After: Redis did not answer, so nothing was accepted; the sender retries."""
    response = answer(source, 503, app=app, seen=seen, error="queue unavailable",
                      reason="Redis is unreachable; retry later", **body)
    response.headers["Retry-After"] = str(retry_after)
    return response
