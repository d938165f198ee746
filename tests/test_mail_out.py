"""Email both ways, the outbound side: customer emails carry a signed Reply-To, every email says it was
sent by a program, the stand-ins and contracts cover what SendGrid and JIRA take and post."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import service_context
from tests.jira_events import move
from tests.standins import JiraStandIn
from tests.standins.jira import CONTRACT, contract_validator
from tests.standins.sendgrid import webhook_validator
from tests.support import KEY, deliver, sam_comment, sent
from webhooks import create_app
from workers import context as process_context
from workers.clients.jira import JiraClient
from workers.clients.mail import AUTOMATIC_HEADERS, Message, OutboxMailer, SendGridMailer
from workers.context import Context
from workers.core.replies import ReplyAddresses, read_reply_address
from workers.exceptions import JiraError, MailError, TransientError
from workers.stores.ledger import EffectLedger

SECRET = "s3cret-key-for-the-tests-0123456789"
DOMAIN = "replies.acme.example"
EVENTS = Path(__file__).parent / "payloads" / "sendgrid" / "events"


def message(**changes) -> Message:
    fields = dict(to=("jane@customer.example",), subject="[SUP-1] We need your feedback", text="Hello",
                  html="<p>Hello</p>", effect_id="d1:feedback-request:0", ticket="SUP-1", category="feedback_request")
    return Message(**{**fields, **changes})


def read(address: str):
    return read_reply_address(SECRET, DOMAIN, address, time.time(), 30)


@pytest.fixture
def replies(settings, redis, jira, sendgrid):
    """The worker with JIRA, SendGrid and replies configured (REPLY_DOMAIN, RELANCE_SECRET_KEY, MAIL_REPLY_TO)."""
    yield service_context(settings.replace(reply_domain=DOMAIN, secret_key=SECRET,
                                           mail_reply_to="Help desk <help@acme.example>"), redis, jira, sendgrid)
    process_context.use(None)


# -- the mailers -----------------------------------------------------------------------------------

def test_a_message_s_own_reply_to_replaces_mail_reply_to_and_every_mail_says_it_is_automatic(sendgrid):
    mailer = SendGridMailer(sendgrid.api_key, sendgrid.url, "Acme Support <support@acme.example>",
                            reply_to="Help desk <help@acme.example>")
    mailer.send(message(reply_to="sup-1.abc@replies.acme.example"))
    mailer.send(message(effect_id="d2:escalation:0", headers={"X-Relance-Test": "yes"}))
    customer, support = sendgrid.messages
    assert customer["reply_to"] == {"email": "sup-1.abc@replies.acme.example"}
    assert support["reply_to"] == {"email": "help@acme.example", "name": "Help desk"}
    assert customer["headers"] == {"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "OOF, AutoReply"}
    assert support["headers"] == {**AUTOMATIC_HEADERS, "X-Relance-Test": "yes"}
    assert support["custom_args"] == {"issue_key": "SUP-1", "relance_effect": "d2:escalation:0"}


def test_the_outbox_eml_carries_the_reply_to_and_the_automatic_headers(tmp_path):
    mailer = OutboxMailer(tmp_path, "Acme Support <support@acme.example>", reply_to="help@acme.example")
    customer = email.message_from_bytes(Path(mailer.send(message(reply_to="sup-1.x@replies.acme.example")))
                                        .read_bytes(), policy=email.policy.default)
    support = email.message_from_bytes(Path(mailer.send(message(effect_id="d2:x:0"))).read_bytes(),
                                       policy=email.policy.default)
    assert customer["Reply-To"] == "sup-1.x@replies.acme.example"
    assert support["Reply-To"] == "help@acme.example"
    for sent_mail in (customer, support):
        assert sent_mail["Auto-Submitted"] == "auto-generated"
        assert sent_mail["X-Auto-Response-Suppress"] == "OOF, AutoReply"


def test_a_header_sendgrid_reserves_is_a_permanent_failure_with_sendgrid_s_reason(sendgrid):
    with pytest.raises(MailError) as refused:
        SendGridMailer(sendgrid.api_key, sendgrid.url, "support@acme.example").send(
            message(headers={"Reply-To": "someone@else.example"}))
    assert refused.value.status == 400 and "Header can not be one of the reserved keys." in str(refused.value)
    assert sendgrid.messages == []


# -- customer and support emails through the worker --------------------------------------------------

def test_a_customer_email_carries_a_reply_to_signed_for_the_ticket_and_the_reporter(replies, jira, sendgrid):
    deliver(replies, move(jira, KEY, "Waiting for feedback", comment=sam_comment(), actor={"accountId": "acc-sam"}),
            "d1")
    [mail] = sent(sendgrid, "feedback_request")
    address = mail["reply_to"]["email"]
    assert address.endswith("@" + DOMAIN)
    token = read(address)
    assert token.key == KEY
    assert token.issued_to(SECRET, "jane@customer.example") and token.issued_to(SECRET, "Jane@Customer.example")
    assert not token.issued_to(SECRET, "sam@support.example")
    assert mail["headers"]["Auto-Submitted"] == "auto-generated"
    assert mail["custom_args"] == {"issue_key": KEY, "relance_effect": "d1:feedback-request:0"}
    ledger = EffectLedger(replies.redis)
    intent = ledger.get("d1:feedback-request:0")["intent"]
    assert (intent["audience"], intent["reply_to"]) == ("customer", address)
    assert ledger.sent("d1:feedback-request:0")["reply_to"] == address


def test_an_email_to_support_keeps_mail_reply_to(replies, jira, sendgrid):
    deliver(replies, move(jira, KEY, "Resolved"), "d1")
    deliver(replies, move(jira, KEY, "Reopened", comment={"id": "5", "body": "Still broken",
                                                           "author": {"accountId": "acc-jane"}}), "d2")
    [notice] = sent(sendgrid, "resolved_notice")        # to the reporter: signed
    assert read(notice["reply_to"]["email"]).key == KEY
    [escalation] = sent(sendgrid, "escalation")         # to support-leads@: the configured Reply-To
    assert escalation["reply_to"] == {"email": "help@acme.example", "name": "Help desk"}
    assert escalation["headers"]["Auto-Submitted"] == "auto-generated"
    ledger = EffectLedger(replies.redis)
    assert ledger.get("d2:escalate-reopened:2")["intent"]["audience"] == "support"
    assert ledger.get("d1:resolved-notice:0")["intent"]["audience"] == "customer"
    assert ledger.sent("d2:escalate-reopened:2")["reply_to"] == "Help desk <help@acme.example>"


def test_without_reply_domain_customer_emails_are_unchanged(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Waiting for feedback", comment=sam_comment()), "d1")
    [mail] = sent(sendgrid, "feedback_request")
    assert "reply_to" not in mail
    assert mail["headers"]["Auto-Submitted"] == "auto-generated"         # every email, replies or not
    intent = EffectLedger(service.redis).get("d1:feedback-request:0")["intent"]
    assert (intent["audience"], intent["reply_to"]) == ("customer", None)


def test_in_the_outbox_and_on_the_dashboard_a_customer_email_shows_its_reply_address(settings, redis, jira):
    op = settings.replace(reply_domain=DOMAIN, secret_key=SECRET, operator_password="op-secret")
    ctx = Context.build(op, redis)                                       # no JIRA, no SendGrid: the outbox
    process_context.use(ctx)
    try:
        deliver(ctx, move(jira, KEY, "Waiting for feedback", cloud=False), "d1")   # Server: the email is in it
    finally:
        process_context.use(None)
    [eml] = settings.outbox_dir.glob("d1_feedback-request_0.eml")
    written = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    token = read(written["Reply-To"])
    assert token.key == KEY and token.issued_to(SECRET, "jane@customer.example")
    assert written["Auto-Submitted"] == "auto-generated"
    auth = {"Authorization": "Basic " + base64.b64encode(b"operator:op-secret").decode()}
    page = create_app(op).test_client().get("/operator/sent/d1:feedback-request:0", headers=auth).get_data(as_text=True)
    assert f"<code>{written['Reply-To']}</code>" in page and "(customer)" in page


def test_a_retry_sends_the_reply_address_first_issued(replies, jira, sendgrid):
    sendgrid.fail_next(1, status=503)
    with pytest.raises(TransientError):
        replies.effects.perform_rule("feedback-request", _feedback_steps(replies), _ticket(replies), "d9")
    first = EffectLedger(replies.redis).get("d9:feedback-request:0")["intent"]["reply_to"]
    replies.effects.replies = _Tomorrow(SECRET, DOMAIN)      # the retry runs on another day
    replies.effects.perform_rule("feedback-request", _feedback_steps(replies), _ticket(replies), "d9")
    [mail] = sendgrid.messages
    assert mail["reply_to"]["email"] == first
    assert _Tomorrow(SECRET, DOMAIN).address(KEY, "jane@customer.example", time.time()) != first


class _Tomorrow(ReplyAddresses):
    def address(self, key, recipient, now_s):
        return super().address(key, recipient, now_s + 86400)


def _feedback_steps(ctx):
    rule = next(r for r in ctx.rules.rules if r.name == "feedback-request")
    return list(enumerate(rule.do))


def _ticket(ctx):
    from workers.actions import Ticket
    return Ticket.from_issue(KEY, ctx.effects.jira.issue(KEY))


# -- the SendGrid stand-in and the webhooks' contract -------------------------------------------------

def _post(sendgrid, **changes):
    body = {"personalizations": [{"to": [{"email": "jane@example.com"}]}], "from": {"email": "support@example.com"},
            "subject": "Hi", "content": [{"type": "text/plain", "value": "Hi"}], **changes}
    return requests.post(f"{sendgrid.url}/v3/mail/send", json=body,
                         headers={"Authorization": f"Bearer {sendgrid.api_key}"})


@pytest.mark.parametrize("changes, field, says", [
    ({"headers": {"X-Count": 3}}, "headers", "The header values must be strings."),
    ({"headers": {"to": "x@example.com"}}, "headers", "Header can not be one of the reserved keys."),
    ({"headers": {"X-A": "1", "x-a": "2"}}, "headers", "The headers cannot contain duplicate keys."),
    ({"headers": {"X Spaced": "1"}}, "headers", "Header keys cannot contain non-ASCII characters and empty spaces."),
    ({"personalizations": [{"to": [{"email": "jane@example.com"}], "custom_args": {"n": 1}}]},
     "personalizations.0.custom_args", "All values of custom arguments object must be strings"),
    ({"custom_args": {}}, "custom_args", "custom_args cannot be empty."),
    ({"custom_args": {"big": "x" * 10_001}}, "custom_args", "may not exceed 10,000 bytes"),
    ({"reply_to": {"email": "a@example.com"}, "reply_to_list": [{"email": "b@example.com"}]}, "reply_to_list",
     "but not both"),
    ({"reply_to": {"email": "not an address"}}, "reply_to.email", "does not contain a valid address"),
])
def test_the_sendgrid_stand_in_refuses_what_sendgrid_refuses(sendgrid, changes, field, says):
    response = _post(sendgrid, **changes)
    assert response.status_code == 400
    assert any(e["field"] == field and says in e["message"] for e in response.json()["errors"]), response.json()
    assert sendgrid.messages == []


def test_the_sendgrid_stand_in_keeps_reply_to_headers_and_custom_args(sendgrid):
    response = _post(sendgrid, reply_to={"email": "sup-1.x@replies.acme.example"},
                     headers={"Auto-Submitted": "auto-generated"}, custom_args={"issue_key": "SUP-1"})
    assert response.status_code == 202
    [kept] = sendgrid.messages
    assert (kept["reply_to"], kept["headers"], kept["custom_args"]) == (
        {"email": "sup-1.x@replies.acme.example"}, {"Auto-Submitted": "auto-generated"}, {"issue_key": "SUP-1"})


CAPTURES = sorted(p for p in EVENTS.rglob("*.json") if p.name != "custom-args-v3-fragment.json")


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: str(p.relative_to(EVENTS)))
def test_every_captured_event_webhook_body_fits_the_contract(path):
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in webhook_validator("event_webhook_body").iter_errors(json.loads(path.read_bytes()))]
    assert not errors, errors


def test_the_event_contract_refuses_what_is_not_an_event_body():
    check = webhook_validator("event_webhook_body")
    fragment = json.loads((EVENTS / "sendgrid-docs-2021" / "custom-args-v3-fragment.json").read_text())
    assert not check.is_valid(fragment)                 # the docs' partial example: no event, no timestamp
    bounce = {"event": "bounce", "email": "jane@customer.example", "timestamp": 1764322200, "sg_event_id": "e1",
              "reason": "550 5.1.1 mailbox unavailable", "status": "5.1.1", "type": "bounce",
              "issue_key": "SUP-1", "relance_effect": "d1:feedback-request:0"}
    assert check.is_valid([bounce])
    assert not check.is_valid([])
    assert not check.is_valid([{**bounce, "issue_key": 1}])              # custom args are strings
    assert not check.is_valid([{k: v for k, v in bounce.items() if k != "reason"}])
    assert not check.is_valid([{k: v for k, v in bounce.items() if k != "email"}])
    assert check.is_valid([{**bounce, "event": "deferred", "response": "try later", "attempt": 2}])


def test_the_inbound_parse_contract_tells_the_two_modes_apart():
    check = webhook_validator("inbound_parse_fields")
    common = {"from": "Claire <claire@client.example>", "to": "sup-1.x@replies.acme.example",
              "envelope": '{"to":["sup-1.x@replies.acme.example"],"from":"claire@client.example"}'}
    assert check.is_valid({**common, "headers": "Subject: Re: x\r\n", "html": "<p>Merci</p>", "attachments": "0"})
    assert check.is_valid({**common, "email": "Subject: Re: x\r\n\r\nMerci"})
    assert not check.is_valid({**common, "headers": "x", "email": "y"})         # one mode or the other
    assert not check.is_valid({"headers": "x", "to": "a@b.example"})            # no from
    assert not check.is_valid({**common, "headers": "x", "attachments": "two"})
    assert webhook_validator("inbound_parse_files").is_valid(["attachment1", "attachment2"])
    assert not webhook_validator("inbound_parse_files").is_valid(["file"])


# -- JIRA: comments and attachments ----------------------------------------------------------------------

@pytest.fixture
def client(jira):
    return JiraClient(jira.url, jira.email, jira.api_token)


def test_a_comment_relance_posts_comes_back_with_its_id_and_relance_as_author(client, jira):
    created = client.add_comment(KEY, "Thanks, we are on it.")
    assert created["id"] and created["body"] == "Thanks, we are on it." and created["created"]
    assert created["author"]["accountId"] == client.myself()["accountId"]
    [shown] = [c for c in jira.issue(KEY)["fields"]["comment"]["comments"] if c["id"] == created["id"]]
    assert shown["body"] == "Thanks, we are on it."


def test_an_attachment_uploads_and_shows_on_the_issue(client, jira):
    data = b"%PDF-1.4 relev\xc3\xa9\n" * 100
    [created] = client.add_attachment(KEY, "relevé de compte.pdf", data, "application/pdf")
    errors = [e.message for e in contract_validator(CONTRACT["operations"]["addAttachment"]["response"]["schema"])
              .iter_errors([created])]
    assert not errors, errors
    assert (created["filename"], created["size"], created["mimeType"]) == ("relevé de compte.pdf", len(data),
                                                                           "application/pdf")
    assert created["author"]["accountId"] == "relance-bot"
    [listed] = client.attachments(KEY)
    assert (listed["id"], listed["filename"], listed["size"]) == (created["id"], "relevé de compte.pdf", len(data))
    content = requests.get(listed["content"], auth=(jira.email, jira.api_token))
    assert content.content == data and content.headers["Content-Type"] == "application/pdf"
    upload = next(r for r in jira.requests if r.path.endswith("/attachments"))
    assert upload.headers["X-Atlassian-Token"] == "no-check"


def test_jira_blocks_an_upload_without_the_no_check_header(jira):
    files = {"file": ("a.txt", b"hello", "text/plain")}
    blocked = requests.post(f"{jira.url}/rest/api/2/issue/{KEY}/attachments", files=files,
                            auth=(jira.email, jira.api_token))
    assert (blocked.status_code, blocked.text) == (403, "XSRF check failed")
    as_json = requests.post(f"{jira.url}/rest/api/2/issue/{KEY}/attachments", json={"file": "hello"},
                            auth=(jira.email, jira.api_token), headers={"X-Atlassian-Token": "no-check"})
    assert as_json.status_code == 415
    misnamed = requests.post(f"{jira.url}/rest/api/2/issue/{KEY}/attachments", files={"upload": files["file"]},
                             auth=(jira.email, jira.api_token), headers={"X-Atlassian-Token": "no-check"})
    assert misnamed.status_code == 400 and "'file'" in misnamed.json()["errorMessages"][0]
    anonymous = requests.post(f"{jira.url}/rest/api/2/issue/{KEY}/attachments", files=files,
                              headers={"X-Atlassian-Token": "no-check"})
    assert anonymous.status_code == 401
    assert jira.attachments(KEY) == []


def test_an_upload_jira_refuses_is_a_jira_error_and_an_outage_is_transient(client, jira):
    with pytest.raises(JiraError) as unknown:
        client.add_attachment("SUP-404", "a.txt", b"x", "text/plain")
    assert unknown.value.status == 404
    small = JiraStandIn(max_attachment_size=1000)
    with small:
        small.add_issue(KEY)
        with pytest.raises(JiraError) as too_big:
            JiraClient(small.url, small.email, small.api_token).add_attachment(KEY, "big.bin", b"x" * 1001,
                                                                              "application/octet-stream")
        assert too_big.value.status == 413 and "big.bin" in str(too_big.value)
        assert small.attachments(KEY) == []
    jira.fail_next(1, status=429, retry_after=0, path_contains="/attachments")
    client.add_attachment(KEY, "a.txt", b"once", "text/plain")              # waited out, then sent once
    assert [a["data"] for a in jira.attachments(KEY)] == [b"once"]
    jira.fail_next(1, status=503, path_contains="/attachments", after_serving=True)
    with pytest.raises(TransientError):
        client.add_attachment(KEY, "b.txt", b"twice?", "text/plain")
    # The answer was lost but the file is there: what a retry looks at before uploading again.
    assert [(a["filename"], a["size"]) for a in client.attachments(KEY)] == [("a.txt", 4), ("b.txt", 6)]
