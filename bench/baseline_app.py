"""Baselines for webhook acceptance.

``app``: a bare Flask endpoint that reads the body and answers 202.
``stored``: the same, storing the body in Redis first (one SET, REDIS_URL, the web's client
settings): the least any endpoint that keeps a delivery before answering 202 can cost.
"""

import os

from flask import Flask, request

app = Flask(__name__)


@app.post("/webhooks/jira")
def receive():
    request.get_data()
    return {"status": "queued"}, 202


stored = Flask(__name__)


@stored.post("/webhooks/jira")
def receive_and_store():
    from workers import defaults
    from workers.stores.connection import redis_from_url
    if "redis" not in stored.extensions:
        stored.extensions["redis"] = redis_from_url(os.environ["REDIS_URL"],
                                                    socket_timeout=defaults.REDIS_SOCKET_TIMEOUT_SECONDS)
    body = request.get_data()
    stored.extensions["redis"].set(f"bench:body:{request.headers.get('X-Atlassian-Webhook-Identifier')}", body,
                                   ex=600)
    return {"status": "queued"}, 202
