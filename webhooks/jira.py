"""POST /webhooks/jira: verify, parse, dedupe, enqueue. Answers in milliseconds.

202 queued; 200 for a redelivery already accepted and for events no rule
reads; 400 malformed; 401 bad signature or URL token; 413 too large; 503 Redis down.
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, current_app, g, request
from redis.exceptions import RedisError

from workers.stores.deliveries import delivery_id
from workers.core.events import HANDLED_EVENTS, ISSUE_KEY, identity_problem
from workers.stores.queue import enqueue_delivery

from . import verdicts
from .signature import verify, verify_token

bp = Blueprint("jira", __name__)
log = logging.getLogger("relance.webhooks")


def _unauthenticated(settings, body: bytes) -> str | None:
    """Why this request is not authenticated, or None. Each credential that is set is required:
    with both a secret and a token, a delivery needs the right signature and the right token."""
    token = settings.reveal("jira_webhook_token")
    if token:
        problem = verify_token(token, request.args.get("token"))
        if problem:
            return problem
    secret = settings.reveal("jira_webhook_secret")
    if secret:
        return verify(secret, body, request.headers.get("X-Hub-Signature"))
    return None


def answer(code: int, **body):
    """The JSON answer, counted in relance_deliveries_total and logged for the dashboard (verdicts.answer)."""
    return verdicts.answer("jira", code, **body)


@bp.post("/webhooks/jira")
def receive():
    edge = current_app.extensions["relance"]
    body = request.get_data(cache=False)      # raw bytes; 413 past MAX_CONTENT_LENGTH
    problem = _unauthenticated(edge.settings, body)
    if problem:
        return answer(401, error="unauthorized", reason=problem)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as e:      # RecursionError: absurdly deep nesting
        return answer(400, error="malformed JSON", reason=str(e)[:200] or e.__class__.__name__)
    if not isinstance(payload, dict):
        return answer(400, error="unexpected body", reason="the body must be a JSON object")
    event = payload.get("webhookEvent")
    issue = payload.get("issue")
    key = issue.get("key") if isinstance(issue, dict) else None
    g.webhook = {"event": event if isinstance(event, str) else None,
                 "ticket": key.upper() if isinstance(key, str) and ISSUE_KEY.fullmatch(key.upper()) else None}
    if event is not None and not isinstance(event, str):
        return answer(400, error="unexpected body", reason="'webhookEvent' must be a string")
    if event is None and not (isinstance(payload.get("issue"), dict) and "changelog" in payload):
        return answer(400, error="not a JIRA webhook", reason="no 'webhookEvent' in the body")
    if event is not None and event not in HANDLED_EVENTS:
        return answer(200, status="ignored", reason=f"no rule reads {event} events")
    problem = identity_problem(payload)
    if problem:
        return answer(200, status="ignored", reason=problem)

    did = delivery_id(request.headers.get("X-Atlassian-Webhook-Identifier"), body)
    try:
        fresh = edge.deliveries.put(did, body)
        if not fresh and edge.deliveries.is_done(did):
            return answer(200, status="duplicate", delivery=did)
        # Queue even a redelivery whose job is missing (Redis failed between the two writes):
        # the job id is unique, and a processed delivery is a no-op.
        queued = enqueue_delivery(edge.queue, did, edge.settings.job_timeout)
    except RedisError as e:
        log.error("webhook %s not accepted, Redis unavailable: %s", did, e)
        return verdicts.unavailable("jira", edge.retry_after)
    if not fresh and not queued:
        return answer(200, status="duplicate", delivery=did)
    return answer(202, status="queued", delivery=did)
