"""GET /healthz: the process answers; Redis is reported but does not fail the check."""

from flask import Blueprint, current_app, jsonify
from redis.exceptions import RedisError

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    edge = current_app.extensions["relance"]
    try:
        redis_ok = bool(edge.redis.ping())
    except RedisError:
        redis_ok = False
    return jsonify(status="ok", redis=redis_ok,
                   jira="configured" if edge.settings.jira_configured else "dry run",
                   mail="sendgrid" if edge.settings.sendgrid_configured else "outbox")


@bp.get("/readyz")
def readyz():
    """200 when this process can take deliveries: Redis answers and the rules are loaded; else 503 and why.

    For a load balancer or a platform's readiness check; ``/healthz`` only says the process is up.
    """
    edge = current_app.extensions["relance"]
    problems = []
    try:
        edge.redis.ping()
    except RedisError as e:
        problems.append(f"Redis does not answer: {e.__class__.__name__}")
    if edge.rules is None:
        problems.append("the rules are not loaded")
    if problems:
        response = jsonify(status="not ready", reasons=problems)
        response.status_code = 503
        response.headers["Retry-After"] = str(edge.retry_after)
        return response
    return jsonify(status="ready", rules=len(edge.rules.rules))
