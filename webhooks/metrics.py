"""GET /metrics: Prometheus text, the same from every web process (the counts live in Redis).

Behind the operator's HTTP Basic auth unless METRICS_PUBLIC=1.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from .operator import operator_denied

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics():
    edge = current_app.extensions["relance"]
    if not edge.settings.metrics_public:
        denied = operator_denied()
        if denied is not None:
            return denied
    try:
        body = edge.metrics.exposition(edge.settings.queue_name)
    except RedisError as e:
        return Response(f"metrics unavailable: Redis does not answer ({e.__class__.__name__})\n", 503,
                        {"Retry-After": str(edge.retry_after)}, mimetype="text/plain")
    return Response(body, 200, mimetype=CONTENT_TYPE_LATEST)
