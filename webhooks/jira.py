"""POST /webhooks/jira: verify, parse, dedupe, enqueue. Answers in milliseconds.

202 queued; 200 for a redelivery already accepted and for events no rule
reads; 400 malformed; 401 bad signature or URL token; 413 too large; 503 Redis down.
"""

from __future__ import annotations

import json
import logging

import orjson

from flask import Blueprint, Flask, Request, Response, current_app, request
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException, InternalServerError

from workers.stores.deliveries import delivery_id
from workers.core.events import HANDLED_EVENTS, ISSUE_KEY, identity_problem
from workers.failures import DELIVERY_FUNC
from workers.stores.intake import CODES
from workers.stores.queue import delivery_job_id

from . import verdicts
from .signature import verify, verify_token

bp = Blueprint("jira", __name__)
log = logging.getLogger("relance.webhooks")
PATH = "/webhooks/jira"


def _unauthenticated(settings, request: Request, body: bytes) -> str | None:
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


def parse(body: bytes):
    """The JSON body: orjson's parse (a third of the stdlib's time on an 11 KB delivery), or, for what
    orjson refuses and the stdlib takes (NaN, integers past 64 bits, UTF-16), the stdlib's; raises
    the stdlib's ValueError, whose message names the line and column."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


@bp.post(PATH)
def receive_in_flask():
    """The route in Flask's URL map (its 405 for other methods, url_for); requests reach ``receive``
    through ``webhooks.FastRoutes`` before Flask's dispatch, this view only if that is bypassed."""
    return receive(current_app._get_current_object(), request._get_current_object())


def receive(app: Flask, request: Request) -> Response:
    """Answer one JIRA delivery. Needs no Flask context: ``webhooks.FastRoutes`` calls it before
    Flask's dispatch, whose contexts and URL matching cost as much as a bare endpoint's work."""
    try:
        return _receive(app, request)
    except HTTPException as e:                      # 413: a body over MAX_CONTENT_LENGTH
        return verdicts.answer("jira", e.code, app=app, seen={}, error=e.name.lower(), reason=e.description)
    except Exception:
        log.exception("Exception on %s [%s]", request.path, request.method)
        error = InternalServerError()
        return verdicts.answer("jira", error.code, app=app, seen={}, error=error.name.lower(),
                               reason=error.description)


def _receive(app: Flask, request: Request) -> Response:
    edge = app.extensions["relance"]
    body = request.get_data(cache=False)      # raw bytes; 413 past MAX_CONTENT_LENGTH
    seen = {}                                 # the ticket and event, for the delivery log

    def answer(code: int, **body) -> Response:
        return verdicts.answer("jira", code, app=app, seen=seen, **body)

    problem = _unauthenticated(edge.settings, request, body)
    if problem:
        return answer(401, error="unauthorized", reason=problem)
    try:
        payload = parse(body)
    except (ValueError, RecursionError) as e:      # RecursionError: absurdly deep nesting
        return answer(400, error="malformed JSON", reason=str(e)[:200] or e.__class__.__name__)
    if not isinstance(payload, dict):
        return answer(400, error="unexpected body", reason="the body must be a JSON object")
    event = payload.get("webhookEvent")
    issue = payload.get("issue")
    key = issue.get("key") if isinstance(issue, dict) else None
    seen.update(ticket=key.upper() if isinstance(key, str) and ISSUE_KEY.fullmatch(key.upper()) else None,
                event=event if isinstance(event, str) else None)
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
        # One round trip: store, dedupe, queue, count and log (a redelivery whose job is missing is queued again).
        verdict = edge.intake.accept(did, body, DELIVERY_FUNC, delivery_job_id(did), (did,),
                                     timeout=edge.settings.job_timeout, counter=verdicts.counter("jira"),
                                     log={"source": "jira", **seen, "delivery": did})
    except RedisError as e:
        log.error("webhook %s not accepted, Redis unavailable: %s", did, e)
        return verdicts.unavailable("jira", edge.retry_after, app=app, seen=seen)
    return verdicts.respond(app, CODES[verdict], {"status": verdict, "delivery": did})
