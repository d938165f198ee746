"""SendGrid's two webhooks: verify, store the raw post, queue it. Answers in milliseconds.

POST /webhooks/sendgrid/inbound takes Inbound Parse posts (a customer's email reply, default or
``send_raw`` mode): 202 queued (job ``workers.replies.process_reply``); 200 for a redelivery already
accepted; 400 not a multipart post, or no reply address at REPLY_DOMAIN among its recipients; 401 bad
signature; 403 a reply address relance did not sign, or one past REPLY_TOKEN_TTL (then also on the
ticket's timeline); 404 replies are not enabled (no REPLY_DOMAIN); 413 over 32 MiB; 503 Redis down.

POST /webhooks/sendgrid/events takes Event Webhook batches (what became of relance's emails): 202
queued (job ``workers.mail_events.process_mail_events``); 200 for a redelivery or a batch in which no
event names a ticket (``issue_key``); 400 not a JSON array of objects; 401 bad signature; 404 SendGrid
not configured; 413 over 1 MiB (SendGrid posts at most 768 KB a batch); 503 Redis down.

SendGrid drops an inbound email on any 4xx and retries only 5xx (for up to 3 days), so a 4xx here is
a verdict on the email itself, never on relance's state: anything transient answers 503.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

from flask import Blueprint, current_app, g, request
from redis.exceptions import RedisError
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData, State

from workers import defaults
from workers.core.events import ISSUE_KEY
from workers.core.replies import find_reply_address, read_reply_address
from workers.exceptions import ReplyTokenExpired, ReplyTokenInvalid
from workers.stores.audit import Audit
from workers.stores.intake import CODES

from . import verdicts
from .signature import SENDGRID_SIGNATURE, SENDGRID_TIMESTAMP, verify_sendgrid

bp = Blueprint("sendgrid", __name__)
log = logging.getLogger("relance.webhooks")

INBOUND_PATH = "/webhooks/sendgrid/inbound"
EVENTS_PATH = "/webhooks/sendgrid/events"
REPLY_JOB = "workers.replies.process_reply"
EVENTS_JOB = "workers.mail_events.process_mail_events"

# The fields the edge reads: where the reply address may be, and who wrote. Each is a line or two;
# a longer one is not an Inbound Parse field.
ADDRESS_FIELDS = ("envelope", "to", "cc", "from")
FIELD_MAX_BYTES = 64 * 1024
_CHUNK = 64 * 1024
REFUSAL_NOTE_SECONDS = 3600     # one "reply refused" timeline entry a ticket this often, at most


def post_id(prefix: str, body: bytes) -> str:
    """A post's delivery id: ``prefix`` + the body's SHA-256 (40 hex), so SendGrid's retry of the same
    post is a duplicate."""
    return prefix + hashlib.sha256(body).hexdigest()[:40]


def read_fields(body: bytes, boundary: bytes, names=ADDRESS_FIELDS) -> dict[str, str]:
    """The text fields ``names`` of a multipart/form-data ``body`` (UTF-8, bad bytes replaced).

    Every other part (the message, attachments, up to 30 MB) is skipped as it is decoded, fed
    64 KiB at a time: the body is never copied whole. Raises ValueError for a body that is not
    multipart/form-data with this boundary, or a field of ``names`` over FIELD_MAX_BYTES.
    """
    decoder = MultipartDecoder(boundary)
    found: dict[str, bytearray] = {}
    current = None
    view = memoryview(body)
    for chunk in [*(view[i:i + _CHUNK] for i in range(0, len(view), _CHUNK)), None]:
        decoder.receive_data(chunk)
        event = decoder.next_event()
        while not isinstance(event, (NeedData, Epilogue)):
            if isinstance(event, Field):
                current = event.name if event.name in names and event.name not in found else None
                if current:
                    found[current] = bytearray()
            elif isinstance(event, File):
                current = None
            elif isinstance(event, Data) and current:
                found[current] += event.data
                if len(found[current]) > FIELD_MAX_BYTES:
                    raise ValueError(f"the {current!r} field is over {FIELD_MAX_BYTES // 1024} KiB")
            event = decoder.next_event()
        if decoder.state is State.EPILOGUE:      # past the closing boundary: no field follows
            break
        # Parts' data leaves the decoder as it comes; only a preamble or part headers could pile up.
        if len(decoder.buffer) > 2 * _CHUNK:
            raise ValueError("no multipart boundary or end of part headers where expected")
    return {name: value.decode("utf-8", "replace") for name, value in found.items()}


def recipients(fields: dict[str, str]) -> list[str]:
    """Where a reply address may be, most trusted first: the SMTP envelope's recipients (JSON field
    ``envelope``), then the To and Cc header texts."""
    out = []
    try:
        envelope = json.loads(fields.get("envelope") or "null")
    except ValueError:
        envelope = None
    to = envelope.get("to") if isinstance(envelope, dict) else None
    if isinstance(to, str):
        out.append(to)
    elif isinstance(to, list):
        out += [a for a in to if isinstance(a, str)]
    return out + [fields[name] for name in ("to", "cc") if fields.get(name)]


def _unsigned(settings, body: bytes) -> str | None:
    """Why this post is not SendGrid's, when SENDGRID_WEBHOOK_PUBLIC_KEY is set; else None."""
    if not settings.sendgrid_webhook_public_key:
        return None
    return verify_sendgrid(settings.sendgrid_webhook_public_key, request.headers.get(SENDGRID_TIMESTAMP), body,
                           request.headers.get(SENDGRID_SIGNATURE), now=time.time())


def _accept(source: str, did: str, stored: bytes, func: str, job_id: str):
    """Store the post (``stored``: its bytes as DeliveryStore keeps them) and queue ``func(did)`` as
    ``job_id``, in one round trip (Intake.accept): 202, 200 for a duplicate, 503 if Redis does not answer."""
    edge = current_app.extensions["relance"]
    seen = g.get("webhook", {})
    try:
        verdict = edge.intake.accept(did, stored, func, job_id, (did,), timeout=edge.settings.job_timeout,
                                     counter=verdicts.counter(source),
                                     log={"source": source, "ticket": seen.get("ticket"),
                                          "event": seen.get("event"), "delivery": did})
    except RedisError as e:
        log.error("%s post %s not accepted, Redis unavailable: %s", source, did, e)
        return verdicts.unavailable(source, edge.retry_after)
    return verdicts.respond(current_app, CODES[verdict], {"status": verdict, "delivery": did})


def _on_timeline(edge, refused: ReplyTokenExpired, sender: str | None) -> None:
    """Put an expired address's refusal on its ticket's timeline (its key is authentic: the address is
    signed), at most once an hour a ticket, so mail to an old address cannot push the ticket's history
    out of its capped timeline; every refusal is in the delivery log."""
    if edge.redis.set(f"relance:replies:refused:{refused.key}", 1, nx=True, ex=REFUSAL_NOTE_SECONDS):
        Audit(edge.redis, ttl=edge.settings.retention).record(refused.key, "reply refused", reason=refused.reason,
                                                             why=str(refused), by=sender)


@bp.post(INBOUND_PATH)
def inbound():
    edge = current_app.extensions["relance"]
    settings = edge.settings
    g.webhook = {"event": "email reply"}
    if not settings.replies_enabled:
        return verdicts.answer("inbound", 404, error="replies not enabled",
                               reason="REPLY_DOMAIN is not set, so relance takes no email replies")
    # Only this route takes bodies this large. request.form is never read (the fields it needs are
    # parsed from the raw body below), so MAX_FORM_MEMORY_SIZE and MAX_FORM_PARTS do not apply.
    request.max_content_length = defaults.INBOUND_MAX_BODY_BYTES
    body = request.get_data(cache=False)      # raw bytes, chunked or not; 413 past the limit
    problem = _unsigned(settings, body)
    if problem:
        return verdicts.answer("inbound", 401, error="unauthorized", reason=problem)
    content_type = request.headers.get("Content-Type", "")
    mimetype, options = parse_options_header(content_type)
    if mimetype != "multipart/form-data" or not options.get("boundary"):
        return verdicts.answer("inbound", 400, error="not an Inbound Parse post",
                               reason="the body must be multipart/form-data with a boundary")
    try:
        fields = read_fields(body, options["boundary"].encode("latin-1"))
    except ValueError as e:
        return verdicts.answer("inbound", 400, error="malformed multipart body", reason=str(e)[:200])

    address = find_reply_address(recipients(fields), settings.reply_domain)
    if address is None:
        return verdicts.answer("inbound", 400, error="no reply address",
                               reason=f"no recipient at {settings.reply_domain} in the envelope, To or Cc")
    try:
        token = read_reply_address(settings.reveal("secret_key"), settings.reply_domain, address, time.time(),
                                   settings.reply_token_days)
    except ReplyTokenInvalid as e:
        return verdicts.answer("inbound", 403, error="reply refused", reason=str(e))
    except ReplyTokenExpired as e:
        g.webhook["ticket"] = e.key
        try:
            _on_timeline(edge, e, fields.get("from") or None)
        except RedisError as redis_error:
            log.error("expired reply to %s not recorded, Redis unavailable: %s", e.key, redis_error)
            return verdicts.unavailable("inbound", edge.retry_after)
        return verdicts.answer("inbound", 403, error="reply refused", reason=str(e))
    g.webhook["ticket"] = token.key
    did = post_id("mail-", body)
    return _accept("inbound", did, edge.deliveries.as_post(content_type, body), REPLY_JOB, f"reply-{did}")


@bp.post(EVENTS_PATH)
def events():
    edge = current_app.extensions["relance"]
    settings = edge.settings
    g.webhook = {"event": "mail events"}
    if not (settings.sendgrid_configured or settings.sendgrid_webhook_public_key):
        return verdicts.answer("events", 404, error="SendGrid not configured",
                               reason="SENDGRID_API_KEY is not set: relance sends no mail through SendGrid, "
                                      "so it takes no SendGrid events")
    body = request.get_data(cache=False)      # 413 past MAX_CONTENT_LENGTH (1 MiB; SendGrid batches 768 KB)
    problem = _unsigned(settings, body)
    if problem:
        return verdicts.answer("events", 401, error="unauthorized", reason=problem)
    try:
        batch = json.loads(body)
    except (ValueError, RecursionError) as e:      # RecursionError: absurdly deep nesting
        return verdicts.answer("events", 400, error="malformed JSON", reason=str(e)[:200] or e.__class__.__name__)
    if not isinstance(batch, list) or not all(isinstance(e, dict) for e in batch):
        return verdicts.answer("events", 400, error="unexpected body",
                               reason="the body must be a JSON array of event objects")
    tickets = {e["issue_key"].upper() for e in batch
               if isinstance(e.get("issue_key"), str) and ISSUE_KEY.fullmatch(e["issue_key"].upper())}
    kinds = sorted({e["event"] for e in batch if isinstance(e.get("event"), str)})
    g.webhook = {"event": ("mail events: " + ", ".join(kinds))[:120] if kinds else "mail events",
                 "ticket": next(iter(tickets)) if len(tickets) == 1 else None}
    if not tickets:
        return verdicts.answer("events", 200, status="ignored",
                               reason=f"none of the {len(batch)} events names a ticket (custom arg issue_key)")
    did = post_id("sgev-", body)
    return _accept("events", did, body, EVENTS_JOB, f"mailevents-{did}")
