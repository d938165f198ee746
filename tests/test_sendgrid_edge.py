"""SendGrid's two webhooks at the web edge, against a real Redis: what SendGrid sees, what is stored
and queued, and what support sees. Real captured posts from tests/payloads/sendgrid (SOURCES.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rq.job import Job
from rq.serializers import JSONSerializer
from werkzeug.serving import make_server

from relance.embedded import free_port
from tests.test_service import Service, bare_env, spawn_procfile_web
from webhooks import create_app
from webhooks.signature import SENDGRID_SIGNATURE, SENDGRID_TIMESTAMP, verify_sendgrid
from workers import defaults
from workers.core.replies import reply_address
from workers.exceptions import ConfigError
from workers.settings import Settings
from workers.stores.audit import Audit
from workers.stores.deliveries import DeliveryStore
from workers.stores.queue import make_queue
from workers.stores.views import delivery_page

CAPTURES = Path(__file__).parent / "payloads" / "sendgrid"
INBOUND, EVENTS = "/webhooks/sendgrid/inbound", "/webhooks/sendgrid/events"
MULTIPART = "multipart/form-data; boundary=xYzZY"
SECRET = "reply-signing-key-0123456789abcdef"
DOMAIN = "replies.acme.example"
CUSTOMER = "jane@customer.example"
DAY = 86400

# Each inbound capture and the recipient it was sent to, which the tests replace by a reply address.
RECIPIENT = {
    "01-real-2019-gmail-reply-quoted-history": "forwarded@inbound.cactus.app",     # in the envelope only
    "03-real-2022-outlook-inline-image-and-attachment": "test@api.mydomain.com",
    "04-real-2023-outlook-send_raw": "test@api.mytestingdomain.com",
    "07-captured-2020-non-utf8-charsets": "inbound@sg.example.com",               # no envelope: the To field
    "08-sendgrid-sample-2016-default": "inbound@inbound.example.com",
    "09-sendgrid-sample-2016-send_raw": "inbound@inbound.inbound.com",
}
SIGNED = ["2020-09-14-dropped", "2020-11-28-test-event-all-types", "2021-04-28-processed-and-bounce-blocked"]


def address(key="SUP-1", issued=None, to=CUSTOMER):
    return reply_address(SECRET, DOMAIN, key, to, time.time() if issued is None else issued)


def forged() -> str:
    """A genuine reply address with the last letter of its signature changed."""
    local, _, domain = address().partition("@")
    return f"{local[:-1]}{'b' if local[-1] == 'a' else 'a'}@{domain}"


def capture(name: str, to: str | None = None) -> bytes:
    """The captured post, its recipient replaced by ``to`` (default: a fresh reply address for SUP-1)."""
    body = (CAPTURES / f"{name}.multipart.txt").read_bytes()
    assert RECIPIENT[name].encode() in body
    return body.replace(RECIPIENT[name].encode(), (to or address()).encode())


def signed_capture(name: str) -> tuple[bytes, dict]:
    headers = json.loads((CAPTURES / f"{name}.headers.json").read_text())
    return (CAPTURES / f"{name}.body.json").read_bytes(), headers


@pytest.fixture(scope="module")
def signing_key():
    """A SendGrid-like key pair: the web gets the public half, the tests sign with the private one."""
    return ec.generate_private_key(ec.SECP256R1())


def public_text(private) -> str:
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def sendgrid_headers(private, body: bytes, timestamp: float | None = None) -> dict:
    """The two headers SendGrid signs a post with."""
    ts = str(int(time.time() if timestamp is None else timestamp))
    signature = private.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SENDGRID_SIGNATURE: base64.b64encode(signature).decode(), SENDGRID_TIMESTAMP: ts}


@pytest.fixture
def mail_settings(settings):
    return settings.replace(reply_domain=DOMAIN, secret_key=SECRET, sendgrid_api_key="SG.test-key")


@pytest.fixture
def client(mail_settings):
    return create_app(mail_settings).test_client()


@pytest.fixture
def signed_client(mail_settings, signing_key):
    return create_app(mail_settings.replace(sendgrid_webhook_public_key=public_text(signing_key))).test_client()


def post_inbound(client, body: bytes, content_type=MULTIPART, **headers):
    return client.post(INBOUND, data=body, headers=headers, content_type=content_type)


def post_events(client, body, **headers):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(EVENTS, data=raw, headers=headers, content_type="application/json")


def job(redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer)


def mail_id(prefix: str, body: bytes) -> str:
    return prefix + hashlib.sha256(body).hexdigest()[:40]


def nothing_kept(redis) -> bool:
    return make_queue(redis).job_ids == [] and not list(redis.scan_iter("relance:delivery:*"))


# -- SendGrid's signature ------------------------------------------------------------------------

@pytest.mark.parametrize("name", SIGNED)
def test_the_signed_captures_verify_byte_for_byte_and_one_changed_byte_does_not(name):
    body, h = signed_capture(name)
    key, ts, signature = h["_verification_public_key"], h[SENDGRID_TIMESTAMP], h[SENDGRID_SIGNATURE]
    assert b"\r\n" in body
    assert verify_sendgrid(key, ts, body, signature) is None
    assert verify_sendgrid(key, ts, body, signature, now=int(ts) + 3 * DAY) is None      # SendGrid's last retry
    changed = body[:20] + bytes([body[20] ^ 1]) + body[21:]
    assert verify_sendgrid(key, ts, changed, signature) == "signature does not match the timestamp and body"
    assert verify_sendgrid(key, str(int(ts) + 1), body, signature) == "signature does not match the timestamp and body"
    assert "so a replay" in verify_sendgrid(key, ts, body, signature, now=int(ts) + 5 * DAY)
    assert "in the future" in verify_sendgrid(key, ts, body, signature, now=int(ts) - 3600)


def test_a_replay_young_enough_to_be_taken_is_still_remembered_as_a_duplicate():
    assert defaults.SENDGRID_SIGNATURE_MAX_AGE_SECONDS >= 3 * DAY          # SendGrid's Inbound Parse retries
    assert defaults.SENDGRID_SIGNATURE_MAX_AGE_SECONDS < min(defaults.DELIVERY_TTL_SECONDS,
                                                             defaults.MAIL_EVENT_TTL_SECONDS)


def test_a_capture_replayed_years_later_is_refused_401_and_a_changed_byte_too(mail_settings, redis):
    body, h = signed_capture("2021-04-28-processed-and-bounce-blocked")
    client = create_app(mail_settings.replace(sendgrid_webhook_public_key=h["_verification_public_key"])).test_client()
    headers = {SENDGRID_SIGNATURE: h[SENDGRID_SIGNATURE], SENDGRID_TIMESTAMP: h[SENDGRID_TIMESTAMP]}
    replayed = post_events(client, body, **headers)
    assert replayed.status_code == 401 and "so a replay" in replayed.json["reason"]
    changed = post_events(client, body.replace(b"processed", b"processeD"), **headers)
    assert changed.status_code == 401
    assert changed.json["reason"] == "signature does not match the timestamp and body"
    assert nothing_kept(redis)


def test_a_signed_inbound_post_is_checked_on_its_bytes_before_parsing(signed_client, signing_key, redis):
    body = capture("07-captured-2020-non-utf8-charsets")         # cp850, latin-1 and cp1252 bytes
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    headers = sendgrid_headers(signing_key, body)
    changed = body.replace(b"\xa2", b"\xa3")
    refused = post_inbound(signed_client, changed, **headers)
    assert refused.status_code == 401
    assert refused.json == {"error": "unauthorized", "reason": "signature does not match the timestamp and body"}
    assert nothing_kept(redis)
    assert post_inbound(signed_client, body, **headers).status_code == 202


@pytest.mark.parametrize("drop, reason", [(SENDGRID_SIGNATURE, f"missing {SENDGRID_SIGNATURE} header"),
                                          (SENDGRID_TIMESTAMP, f"missing {SENDGRID_TIMESTAMP} header")])
def test_an_unsigned_post_is_refused_when_the_key_is_set(signed_client, signing_key, redis, drop, reason):
    body = capture("08-sendgrid-sample-2016-default")
    headers = sendgrid_headers(signing_key, body)
    del headers[drop]
    response = post_inbound(signed_client, body, **headers)
    assert response.status_code == 401 and response.json["reason"] == reason
    assert nothing_kept(redis)


def test_the_key_setting_takes_the_event_webhook_and_the_parse_policy_keys(mail_settings, signing_key, redis):
    other = ec.generate_private_key(ec.SECP256R1())
    app = create_app(mail_settings.replace(sendgrid_webhook_public_key=f"{public_text(other)}, {public_text(signing_key)}"))
    body = capture("08-sendgrid-sample-2016-default")
    assert post_inbound(app.test_client(), body, **sendgrid_headers(signing_key, body)).status_code == 202


@pytest.mark.parametrize("key, why", [
    ("not base64!", "key 1 is not a base64 DER public key"),
    (base64.b64encode(b"not DER").decode(), "key 1 is not a base64 DER public key"),
    (public_text(ec.generate_private_key(ec.SECP384R1())), "key 1 is not an ECDSA P-256 public key"),
])
def test_the_web_refuses_to_start_with_a_key_sendgrid_would_not_show(mail_settings, key, why):
    with pytest.raises(ConfigError, match=f"SENDGRID_WEBHOOK_PUBLIC_KEY: {why}"):
        create_app(mail_settings.replace(sendgrid_webhook_public_key=key))


def test_replies_without_a_signing_key_start_with_a_warning(mail_settings, caplog):
    with caplog.at_level(logging.WARNING, logger="relance.webhooks"):
        create_app(mail_settings)
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY is not" in caplog.text


# -- Inbound Parse -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(RECIPIENT))
def test_a_reply_with_a_signed_address_is_stored_as_posted_and_queued(client, redis, name):
    body = capture(name)
    response = post_inbound(client, body)
    did = mail_id("mail-", body)
    assert response.status_code == 202, response.json
    assert response.json == {"status": "queued", "delivery": did}
    assert make_queue(redis).job_ids == [f"reply-{did}"]
    queued = job(redis, f"reply-{did}")
    assert queued.func_name == "workers.replies.process_reply" and list(queued.args) == [did]
    assert DeliveryStore(redis).post(did) == (MULTIPART, body)
    assert DeliveryStore(redis).body(did).startswith(b"Content-Type: " + MULTIPART.encode() + b"\r\n\r\n--xYzZY")


def test_the_reply_address_may_be_in_cc(client, redis):
    fields = json.loads((CAPTURES / "25-real-2014-unibox-cc-attachment-info-form-fields.json").read_text())
    fields["cc"] = fields["cc"].replace("<c@example.com>", f"Acme support <{address('SUP-7')}>")
    response = client.post(INBOUND, data=fields, content_type="multipart/form-data")
    assert response.status_code == 202
    assert delivery_page(redis)[0][0]["ticket"] == "SUP-7"


def test_a_redelivery_is_a_duplicate_and_queues_nothing_new(client, redis):
    body = capture("01-real-2019-gmail-reply-quoted-history")
    did = post_inbound(client, body).json["delivery"]
    again = post_inbound(client, body)
    assert again.status_code == 200 and again.json == {"status": "duplicate", "delivery": did}
    assert make_queue(redis).job_ids == [f"reply-{did}"]
    make_queue(redis).empty()                       # the job ran and is gone; the delivery is marked done
    DeliveryStore(redis).mark_done(did, "commented")
    assert post_inbound(client, body).json["status"] == "duplicate"
    assert make_queue(redis).job_ids == []


def test_a_redelivery_whose_job_was_lost_is_queued_again(client, redis):
    body = capture("08-sendgrid-sample-2016-default")
    did = post_inbound(client, body).json["delivery"]
    make_queue(redis).empty()                       # stored, but Redis failed before the job was kept
    assert post_inbound(client, body).status_code == 202
    assert make_queue(redis).job_ids == [f"reply-{did}"]


@pytest.mark.parametrize("to, error, reason", [
    ("someone@elsewhere.example", "no reply address", f"no recipient at {DOMAIN} in the envelope, To or Cc"),
    (f"sales@{DOMAIN}", "reply refused", "is not a reply address relance issued"),
    (forged(), "reply refused", "does not match: forged"),
    (address("SUP-2").replace("sup-2.", "sup-3."), "reply refused", "does not match: forged"),
])
def test_a_missing_or_forged_reply_address_is_refused_with_its_reason(client, redis, to, error, reason):
    response = post_inbound(client, capture("08-sendgrid-sample-2016-default", to=to))
    assert 400 <= response.status_code < 500
    assert response.json["error"] == error and reason in response.json["reason"]
    assert nothing_kept(redis)
    assert Audit(redis).recent() == []                          # a forged key names no ticket
    logged = delivery_page(redis)[0][0]
    assert logged["source"] == "inbound" and logged["verdict"] == "rejected" and reason in logged["reason"]


def test_an_expired_reply_address_is_refused_and_said_on_its_ticket(client, redis):
    old = address("SUP-4", issued=time.time() - (defaults.REPLY_TOKEN_DAYS + 5) * DAY)
    response = post_inbound(client, capture("08-sendgrid-sample-2016-default", to=old))
    assert response.status_code == 403
    assert response.json["reason"] == (f"the reply address for SUP-4 was issued {defaults.REPLY_TOKEN_DAYS + 5} days "
                                       f"ago; it is valid for {defaults.REPLY_TOKEN_DAYS} days")
    assert nothing_kept(redis)
    [entry] = Audit(redis).timeline("SUP-4")
    assert entry["kind"] == "reply refused" and entry["reason"] == "expired_token"
    assert entry["why"] == response.json["reason"] and entry["by"] == "Example User <test@example.com>"
    assert delivery_page(redis)[0][0]["ticket"] == "SUP-4"
    for _ in range(3):          # more mail to that address: refused, logged, but the timeline keeps its history
        assert post_inbound(client, capture("09-sendgrid-sample-2016-send_raw", to=old)).status_code == 403
    assert len(Audit(redis).timeline("SUP-4")) == 1
    assert [d["ticket"] for d in delivery_page(redis)[0]] == ["SUP-4"] * 4


@pytest.mark.parametrize("body, content_type, error", [
    (b"to=x", "application/x-www-form-urlencoded", "not an Inbound Parse post"),
    (b"--xYzZY\r\nno headers here", MULTIPART, "malformed multipart body"),
    (b"--xYzZY\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\n" + b"a" * (65 * 1024) + b"\r\n--xYzZY--\r\n",
     MULTIPART, "malformed multipart body"),
    (b"x" * 200_000 + b"\r\n--xYzZY--\r\n", MULTIPART, "malformed multipart body"),     # no part where expected
    ((CAPTURES / "08-sendgrid-sample-2016-default.multipart.txt").read_bytes()[:-12], MULTIPART,
     "malformed multipart body"),                                                       # cut short
])
def test_a_post_that_is_not_inbound_parse_is_refused_400(client, redis, body, content_type, error):
    response = post_inbound(client, body, content_type=content_type)
    assert response.status_code == 400 and response.json["error"] == error
    assert nothing_kept(redis)


def test_without_reply_domain_the_route_answers_404_with_the_reason(settings, redis):
    response = post_inbound(create_app(settings).test_client(), capture("08-sendgrid-sample-2016-default"))
    assert response.status_code == 404
    assert response.json == {"error": "replies not enabled",
                             "reason": "REPLY_DOMAIN is not set, so relance takes no email replies"}


@pytest.mark.parametrize("path", [INBOUND, EVENTS])
def test_redis_down_answers_503_with_retry_after_so_sendgrid_retries(tmp_path, rules_file, path):
    down = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", rules_file=rules_file, reply_domain=DOMAIN,
                    secret_key=SECRET, sendgrid_api_key="SG.test-key")
    client = create_app(down).test_client()
    if path == INBOUND:
        response = post_inbound(client, capture("08-sendgrid-sample-2016-default"))
    else:
        response = post_events(client, [{"event": "delivered", "issue_key": "SUP-1", "sg_event_id": "e1"}])
    assert response.status_code == 503 and response.json["error"] == "queue unavailable"
    assert int(response.headers["Retry-After"]) > 0


def test_redis_down_while_recording_an_expired_reply_answers_503(tmp_path, rules_file):
    down = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", rules_file=rules_file, reply_domain=DOMAIN,
                    secret_key=SECRET)
    old = address("SUP-4", issued=time.time() - 400 * DAY)
    response = post_inbound(create_app(down).test_client(), capture("08-sendgrid-sample-2016-default", to=old))
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0


def big_post(size: int) -> bytes:
    """Capture 08 with an attachment part that makes it ``size`` bytes."""
    head = capture("08-sendgrid-sample-2016-default")
    assert head.endswith(b"\n--xYzZY--")
    head = head.removesuffix(b"--xYzZY--")
    part = b'--xYzZY\r\nContent-Disposition: form-data; name="attachment1"; filename="scan.pdf"\r\n' \
           b"Content-Type: application/pdf\r\n\r\n"
    tail = b"\r\n--xYzZY--\r\n"
    filler = size - len(head) - len(part) - len(tail)
    return head + part + (b"%PDF-1.7 " * (filler // 9 + 1))[:filler] + tail


def test_a_30_mb_reply_is_taken_while_jira_still_refuses_over_1_mib(client, redis):
    body = big_post(30 * 1000 * 1000)
    response = post_inbound(client, body)
    assert response.status_code == 202, response.json
    assert DeliveryStore(redis).post(response.json["delivery"])[1] == body
    too_big = post_inbound(client, big_post(defaults.INBOUND_MAX_BODY_BYTES + 1))
    assert too_big.status_code == 413
    jira = client.post("/webhooks/jira", data=b"{" + b" " * (1024 * 1024 + 10) + b"}", content_type="application/json")
    assert jira.status_code == 413
    assert [(d["source"], d["code"]) for d in delivery_page(redis)[0]] == [("jira", "413"), ("inbound", "413"),
                                                                           ("inbound", "202")]


def chunked(body: bytes, size: int = 256 * 1024):
    """The body as a generator: requests sends it with Transfer-Encoding: chunked, as SendGrid does."""
    for i in range(0, len(body), size):
        yield body[i:i + size]


def post_chunked(url: str, body: bytes):
    response = requests.post(url + INBOUND, data=chunked(body), timeout=60, headers={
        "Content-Type": MULTIPART, "User-Agent": "Sendlib/1.0 mx0045p1mdw1.sendgrid.net"})
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.request.headers
    return response


def test_a_chunked_30_mb_post_through_gunicorn_is_stored_whole(redis, redis_server, tmp_path):
    env = bare_env(REDIS_URL=redis_server.url, REPLY_DOMAIN=DOMAIN, RELANCE_SECRET_KEY=SECRET, WEB_CONCURRENCY="1")
    svc = Service(env)
    svc.web = spawn_procfile_web(env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        svc.start_web(spawned=True)
        body = big_post(30 * 1000 * 1000)
        started = time.monotonic()
        response = post_chunked(svc.url, body)
        took = time.monotonic() - started
        assert response.status_code == 202, response.text
        assert DeliveryStore(redis).post(response.json()["delivery"]) == (MULTIPART, body)
        print(f"30 MB chunked post through gunicorn: {took:.2f} s")
    finally:
        svc.stop()


def test_a_chunked_post_through_the_dev_server_is_stored_whole(mail_settings, redis):
    server = make_server("127.0.0.1", free_port(), create_app(mail_settings))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        body = capture("01-real-2019-gmail-reply-quoted-history")
        response = post_chunked(f"http://127.0.0.1:{server.server_port}", body)
        assert response.status_code == 202, response.text
        assert DeliveryStore(redis).post(response.json()["delivery"]) == (MULTIPART, body)
    finally:
        server.shutdown()
        thread.join()


# -- Event Webhook -------------------------------------------------------------------------------

def ticket_events(key="SUP-1") -> bytes:
    """SendGrid's documented batch of every event type, each carrying relance's custom arg issue_key."""
    batch = json.loads((CAPTURES / "all-event-types.json").read_text())
    return json.dumps([{**e, "issue_key": key} for e in batch]).encode()


def test_a_batch_of_events_is_stored_as_posted_and_queued(client, redis):
    body = ticket_events()
    response = post_events(client, body)
    did = mail_id("sgev-", body)
    assert response.status_code == 202 and response.json == {"status": "queued", "delivery": did}
    queued = job(redis, f"mailevents-{did}")
    assert queued.func_name == "workers.mail_events.process_mail_events" and list(queued.args) == [did]
    assert DeliveryStore(redis).body(did) == body
    again = post_events(client, body)
    assert again.status_code == 200 and again.json["status"] == "duplicate"
    assert make_queue(redis).job_ids == [f"mailevents-{did}"]
    logged = delivery_page(redis)[0][1]
    assert (logged["source"], logged["ticket"]) == ("events", "SUP-1")
    assert logged["event"].startswith("mail events: bounce, click, deferred, delivered, dropped")


def test_a_signed_batch_is_taken_and_a_changed_byte_refused(signed_client, signing_key, redis):
    body = ticket_events()
    headers = sendgrid_headers(signing_key, body)
    assert post_events(signed_client, body.replace(b"SUP-1", b"SUP-2"), **headers).status_code == 401
    assert nothing_kept(redis)
    assert post_events(signed_client, body, **headers).status_code == 202


def test_a_batch_naming_no_ticket_is_acknowledged_and_not_kept(client, redis):
    response = post_events(client, (CAPTURES / "all-event-types.json").read_bytes())
    assert response.status_code == 200 and response.json["status"] == "ignored"
    assert "none of the 11 events names a ticket" in response.json["reason"]
    assert nothing_kept(redis)


@pytest.mark.parametrize("body, error", [
    (b"[{\"event\": ", "malformed JSON"),
    (b"{\"event\": \"delivered\", \"issue_key\": \"SUP-1\"}", "unexpected body"),
    (b"[\"delivered\", {\"issue_key\": \"SUP-1\"}]", "unexpected body"),
    (b"[" * 100_000 + b"]" * 100_000, "malformed JSON"),
])
def test_a_body_that_is_not_a_json_array_of_events_is_refused_400(client, redis, body, error):
    response = post_events(client, body)
    assert response.status_code == 400 and response.json["error"] == error
    assert nothing_kept(redis)


def test_without_sendgrid_the_events_route_answers_404_with_the_reason(settings, redis):
    response = post_events(create_app(settings).test_client(), ticket_events())
    assert response.status_code == 404 and "SENDGRID_API_KEY is not set" in response.json["reason"]
    assert nothing_kept(redis)


def test_a_batch_over_1_mib_is_refused_413(client, redis):
    big = json.dumps([{"event": "open", "issue_key": "SUP-1", "pad": "x" * 1024}] * 1100).encode()
    assert post_events(client, big).status_code == 413
    assert nothing_kept(redis)


# -- what support sees ---------------------------------------------------------------------------

def test_the_deliveries_page_and_metrics_say_which_webhook_each_post_came_to(mail_settings, redis):
    app = create_app(mail_settings.replace(operator_password="op-secret", metrics_public=True))
    client = app.test_client()
    client.post("/webhooks/jira", json={"webhookEvent": "jira:version_created"})
    post_inbound(client, capture("09-sendgrid-sample-2016-send_raw"))
    post_events(client, ticket_events("SUP-9"))
    post_inbound(client, capture("09-sendgrid-sample-2016-send_raw", to="x@elsewhere.example"))
    page = client.get("/operator/deliveries", auth=("operator", "op-secret")).get_data(as_text=True)
    assert re.findall(r'<td data-label="Source" class="source">(\w+)</td>', page) == ["inbound", "events", "inbound",
                                                                                      "jira"]
    assert 'href="/operator/tickets/SUP-9"' in page and "no reply address" in page
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'relance_mail_webhooks_total{source="inbound",verdict="queued"} 1.0' in metrics
    assert 'relance_mail_webhooks_total{source="inbound",verdict="rejected"} 1.0' in metrics
    assert 'relance_mail_webhooks_total{source="events",verdict="queued"} 1.0' in metrics
    assert 'relance_deliveries_total{verdict="ignored"} 1.0' in metrics
