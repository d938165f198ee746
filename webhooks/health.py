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
