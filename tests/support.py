"""Helpers of the job tests: accept a delivery as the edge does, run the queue, read what happened."""

from __future__ import annotations

import json

from workers.stores.audit import Audit
from workers.stores.deliveries import DeliveryStore
from workers.failures import DELIVERY_FUNC
from workers.stores.intake import Intake
from workers.stores.queue import delivery_job_id
from workers.worker import run_worker

KEY = "SUP-1"
QUESTION = "Which version of the SDK do you use? Please attach the stack trace."


def accept(ctx, body, did, **enqueue):
    """Store and queue a delivery as the web edge does (its one-round-trip intake); ``enqueue``: retry, timeout."""
    Intake(DeliveryStore(ctx.redis), ctx.queue).accept(
        did, json.dumps(body).encode() if not isinstance(body, bytes) else body, DELIVERY_FUNC,
        delivery_job_id(did), (did,), **enqueue)


def deliver(ctx, body, did):
    """Accept a delivery as the web edge does, then run the queue with a burst worker."""
    accept(ctx, body, did)
    run_worker(ctx, burst=True)


def fire_due(ctx, at: float):
    """Move timers due at ``at`` onto the queue and run it."""
    moved = ctx.timers.pump(ctx.queue, at)
    run_worker(ctx, burst=True)
    return moved


def sam_comment(body=QUESTION):
    return {"id": "900", "body": body, "author": {"accountId": "acc-sam", "displayName": "Sam Support"},
            "created": "2026-11-28T10:00:00.000+0000"}


def sent(sendgrid, template):
    """The mails SendGrid accepted that were made from ``template``."""
    return [m for m in sendgrid.messages if m.get("categories") == [template]]


def kinds(ctx, key=KEY):
    return [e["kind"] for e in Audit(ctx.redis).timeline(key)]
