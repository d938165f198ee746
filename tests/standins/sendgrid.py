"""A local HTTP stand-in for SendGrid's v3 Mail Send API (POST /v3/mail/send), for tests.

It checks what the real API checks: the bearer API key, the request body against the
published schema (tests/contracts/sendgrid-mail-send.schema.json), and the documented
rules a schema cannot express (at least one personalization and recipient, valid and
unique addresses, a subject unless a template or every personalization gives one,
non-empty content unless a template is used, text/plain before text/html, base64
attachments, a reply_to or a reply_to_list but not both, headers whose values are strings
and whose names are ASCII without spaces, unique (case-insensitively) and none of the
reserved ones, custom_args of string values, not empty, at most 10,000 bytes). It answers as SendGrid does: 202 with an X-Message-Id header and an
empty body, 200 in sandbox mode (validated, not delivered), 400/401/403 with
{"errors": [{"message", "field", "help"}]}, and injected 429/5xx with SendGrid's
X-RateLimit-* headers.

Accepted messages are kept, parsed, in `messages`, which tests can block on with
`wait_for`. Error wording and help links follow SendGrid's published errors page and
real responses quoted in its libraries' issue trackers (see tests/contracts/README.md).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import secrets
import math
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

from flask import Flask, Response, jsonify, request
from jsonschema import Draft202012Validator

from ._server import RateLimit, Recorder, RecordedRequest, StandInServer, describe_request, record_exchange

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "contracts" / "sendgrid-mail-send.schema.json"
MAIL_SEND_SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
_VALIDATOR = Draft202012Validator(MAIL_SEND_SCHEMA)
# What SendGrid posts to us: Event Webhook bodies and Inbound Parse form fields (hand-written, see the README).
WEBHOOKS_SCHEMA: dict[str, Any] = json.loads((SCHEMA_PATH.parent / "sendgrid-webhooks.schema.json").read_text())


def webhook_validator(shape: str) -> Draft202012Validator:
    """A validator for one shape of sendgrid-webhooks.schema.json: ``event_webhook_body``, ``event``,
    ``inbound_parse_fields`` (either mode), ``inbound_parse_default``, ``inbound_parse_raw``,
    ``inbound_parse_files`` (the list of file part names)."""
    if shape not in WEBHOOKS_SCHEMA["$defs"]:
        raise KeyError(f"no webhook shape {shape!r}; there are {sorted(WEBHOOKS_SCHEMA['$defs'])}")
    return Draft202012Validator({"$ref": f"#/$defs/{shape}", "$defs": WEBHOOKS_SCHEMA["$defs"]})

HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
_EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")

FROM_REQUIRED = (
    "The from object must be provided for every email send. It is an object that requires the email "
    "parameter, but may also contain a name parameter.  e.g. {\"email\" : \"example@example.com\"}  or "
    "{\"email\" : \"example@example.com\", \"name\" : \"Example Recipient\"}."
)
PERSONALIZATIONS_REQUIRED = "The personalizations field is required and must have at least one personalization."
TO_REQUIRED = (
    "The to array is required for all personalization objects, and must have at least one email object "
    "with a valid email address."
)
SUBJECT_REQUIRED = (
    "The subject is required. You can get around this requirement if you use a template with a subject "
    "defined or if every personalization has a subject defined."
)
CONTENT_REQUIRED = (
    "Unless a valid template_id is provided, the content parameter is required. There must be at least one "
    "defined content block. We typically suggest both text/plain and text/html blocks are included, but only "
    "one block is required."
)
CONTENT_VALUE = "The content value must be a string at least one character in length."
CONTENT_ORDER = (
    "Following RFC 1341, section 7.2, if either text/html or text/plain are to be sent in your email: "
    "text/plain needs to be first, followed by text/html, followed by any other content."
)
# "You may not include any of the following reserved headers" (the errors page, Headers Errors); compared
# case-insensitively, as mail header names are.
RESERVED_HEADERS = frozenset(h.lower() for h in (
    "x-sg-id", "x-sg-eid", "received", "dkim-signature", "Content-Type", "Content-Transfer-Encoding", "To", "From",
    "Subject", "Reply-To", "CC", "BCC"))
_HEADER_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")       # printable ASCII but the colon, no spaces
CUSTOM_ARGS_MAX_BYTES = 10_000
MAX_ADDRESS_LENGTH = 320

# (field pattern with N for indexes) -> (message, help anchor) for missing/empty fields.
_KNOWN = {
    "from": (FROM_REQUIRED, "#message.from"),
    "from.email": (FROM_REQUIRED, "#message.from"),
    "personalizations": (PERSONALIZATIONS_REQUIRED, "#-Personalizations-Errors"),
    "personalizations.N.to": (TO_REQUIRED, "#message.personalizations.to"),
    "subject": (SUBJECT_REQUIRED, "#message.subject"),
    "content": (CONTENT_REQUIRED, "#message.content"),
    "content.N.value": (CONTENT_VALUE, "#message.content.value"),
}


def _error(message: str, field: str | None = None, help_anchor: str | None = None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": HELP + help_anchor if help_anchor else None}


def _errors_response(status: int, errors: list[dict[str, Any]]) -> Response:
    response = jsonify({"errors": errors})
    response.status_code = status
    return response


def _json_type(value: Any) -> str:
    for python_type, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                              (list, "array"), (dict, "object")):
        if isinstance(value, python_type):
            return name
    return "null"


def schema_errors(body: Any) -> list[dict[str, Any]]:
    """SendGrid-style errors for every violation of the Mail Send request schema."""
    errors = []
    for problem in sorted(_VALIDATOR.iter_errors(body), key=lambda e: list(e.path)):
        field = ".".join(str(part) for part in problem.absolute_path)
        if problem.validator == "required":
            missing = next(name for name in problem.validator_value if name not in problem.instance)
            field = f"{field}.{missing}" if field else missing
        known = _KNOWN.get(re.sub(r"\.\d+(?=\.|$)", ".N", field))
        if known and problem.validator in ("required", "minLength", "minItems"):
            errors.append(_error(known[0], "from.email" if field == "from" else field, known[1]))
        elif problem.validator == "type":
            expected = problem.validator_value
            errors.append(_error(f"Invalid type. Expected: {expected}, given: {_json_type(problem.instance)}.",
                                 field or None))
        else:
            errors.append(_error(problem.message, field or None))
    return errors


def semantic_errors(mail: dict[str, Any]) -> list[dict[str, Any]]:
    """SendGrid's documented rules that the schema does not express, for a schema-valid body."""
    errors: list[dict[str, Any]] = []
    template = mail.get("template_id")
    personalizations = mail["personalizations"]

    if not _EMAIL.match(mail["from"]["email"]):
        errors.append(_error("The from email does not contain a valid address.", "from.email", "#message.from"))
    if "reply_to" in mail and not _EMAIL.match(mail["reply_to"]["email"]):
        errors.append(_error("The reply_to email does not contain a valid address.", "reply_to.email",
                             "#message.reply_to"))
    if "reply_to" in mail and len(mail["reply_to"]["email"]) > MAX_ADDRESS_LENGTH:
        errors.append(_error("The Reply-To email exceeds the maximum total length of 320 characters",
                             "reply_to.email", "#message.reply_to"))
    if "reply_to" in mail and "reply_to_list" in mail:
        errors.append(_error("You can use either the reply_to property or reply_to_list property but not both.",
                             "reply_to_list", "#message.reply_to"))
    errors += header_errors(mail.get("headers"), "headers", "The header values must be strings.")
    errors += custom_args_errors(mail, None)

    if not personalizations:
        errors.append(_error(PERSONALIZATIONS_REQUIRED, "personalizations", "#-Personalizations-Errors"))
    recipients = 0
    for i, personalization in enumerate(personalizations):
        errors += header_errors(personalization.get("headers"), f"personalizations.{i}.headers",
                                "All values of the headers object must be strings.")
        errors += custom_args_errors(mail, i)
        if not personalization["to"]:
            errors.append(_error(TO_REQUIRED, f"personalizations.{i}.to", "#message.personalizations.to"))
        seen: set[str] = set()
        for kind in ("to", "cc", "bcc"):
            for j, address in enumerate(personalization.get(kind, [])):
                recipients += 1
                email = address["email"]
                if not _EMAIL.match(email):
                    errors.append(_error("Does not contain a valid address.", f"personalizations.{i}.{kind}.{j}.email",
                                         f"#message.personalizations.{kind}"))
                elif email.lower() in seen:
                    errors.append(_error(
                        "Each email address in the personalization block should be unique between to, cc, and bcc. "
                        f"We found the first duplicate instance of [{email}] in the personalizations.{i}.{kind} field.",
                        f"personalizations.{i}", "#message.personalizations"))
                seen.add(email.lower())
    if recipients > 1000:
        errors.append(_error("There is a limit of 1000 total recipients (to + cc + bcc) per request.",
                             "personalizations", "#-Personalizations-Errors"))

    if not template and not mail.get("subject") and not (
        personalizations and all(p.get("subject") for p in personalizations)
    ):
        errors.append(_error(SUBJECT_REQUIRED, "subject", "#message.subject"))

    content = mail.get("content") or []
    if not template and not content:
        errors.append(_error(CONTENT_REQUIRED, "content", "#message.content"))
    types = [block["type"] for block in content]
    expected = [t for t in ("text/plain", "text/html") if t in types]
    if types[: len(expected)] != expected:
        errors.append(_error(CONTENT_ORDER, "content"))

    for i, attachment in enumerate(mail.get("attachments", [])):
        try:
            base64.b64decode(attachment["content"], validate=True)
        except (binascii.Error, ValueError):
            errors.append(_error("The attachment content must be base64 encoded.", f"attachments.{i}.content",
                                 "#message.attachments.content"))
    return errors


def header_errors(headers: Any, field: str, not_strings: str) -> list[dict[str, Any]]:
    """The errors page's rules for a ``headers`` object (message or personalization level)."""
    if not headers:
        return []
    anchor = "#message.headers" if field == "headers" else "#message.personalizations.headers"
    errors = []
    if not all(isinstance(v, str) for v in headers.values()):
        errors.append(_error(not_strings, field, anchor))
    if len({name.lower() for name in headers}) != len(headers):
        errors.append(_error("The headers cannot contain duplicate keys.", field, anchor))
    if not all(_HEADER_NAME.match(name) for name in headers):
        errors.append(_error("Header keys cannot contain non-ASCII characters and empty spaces.", field, anchor))
    if any(name.lower() in RESERVED_HEADERS for name in headers):
        errors.append(_error("Header can not be one of the reserved keys.", field, anchor))
    return errors


def custom_args_errors(mail: dict[str, Any], index: int | None) -> list[dict[str, Any]]:
    """The rules for custom_args: string values, not empty, and the message-level ones merged with a
    personalization's (``index``; None: the message level alone) at most 10,000 bytes."""
    field = "custom_args" if index is None else f"personalizations.{index}.custom_args"
    anchor = "#message.custom_args" if index is None else "#message.personalizations.custom_args"
    own = mail.get("custom_args") if index is None else mail["personalizations"][index].get("custom_args")
    if own is None:
        return []
    if not own:
        return [_error("custom_args cannot be empty.", field, anchor)]
    if not all(isinstance(v, str) for v in own.values()):
        return [_error("All values of custom arguments object must be strings", field, anchor)]
    merged = {**(mail.get("custom_args") or {}), **own}
    if len(json.dumps(merged, ensure_ascii=False).encode()) > CUSTOM_ARGS_MAX_BYTES:
        return [_error("The combined size of both global and personalization custom arguments may not exceed "
                       "10,000 bytes per personalization.", field, anchor)]
    return []


class SendGridStandIn(StandInServer):
    """SendGrid's POST /v3/mail/send on 127.0.0.1 for tests (start() returns its base URL).

    Pass the base URL as `host` to sendgrid.SendGridAPIClient. Requests must carry
    "Authorization: Bearer <api_key>"; keys listed in `forbidden_keys` authenticate but
    lack the mail.send scope (403).

    `latency_ms` delays every answer. `rate` (sends per second, bursts of `burst`) is a
    limit on mail send: over it, 429 with X-RateLimit-Reset, the Unix second from which
    sending works again (SendGrid publishes no such limit for mail send, only a ceiling of
    10,000 requests per second; its other v3 endpoints allow 600 a minute). Messages
    accepted are counted per ticket (custom_args.issue_key) in `accepted_per_ticket`;
    `record=False` keeps those counts only, not the messages (a benchmark's thousands).
    """

    def __init__(self, api_key: str = "SG.test-key", forbidden_keys: Iterable[str] = (), latency_ms: float = 0,
                 rate: float | None = None, burst: int | None = None, record: bool = True, port: int = 0,
                 expose_stats: bool = False):
        self.api_key = api_key
        self.forbidden_keys = set(forbidden_keys)
        self._lock = threading.Lock()
        self._failures: list[list[int]] = []  # [remaining, status, reset_in]
        self._recorder: Recorder[RecordedRequest] = Recorder("SendGrid requests", describe_request)
        self._messages: Recorder[dict[str, Any]] = Recorder(
            "accepted SendGrid messages", lambda m: f"{m.get('subject')!r} to {_recipients(m)}"
        )
        self.record = record
        self.rate_limit = RateLimit(rate, burst, latency_ms / 1000) if rate else None
        self.accepted_per_ticket: Counter = Counter()
        super().__init__(self._build_app(), latency_ms=latency_ms, port=port, expose_stats=expose_stats)

    def stats(self) -> dict[str, Any]:
        """Answers by status, 429s of the rate limit (and those sent while a reset announced to the client
        was not yet over), and how many tickets got how many messages ({"1": 9998, "2": 2})."""
        limit = self.rate_limit
        with self._lock:
            mailed = Counter(self.accepted_per_ticket.values())
        return {**super().stats(), "rate_limited": limit.limited if limit else 0,
                "ignored_retry_after": limit.ignored if limit else 0,
                "tickets_by_messages": {str(k): v for k, v in sorted(mailed.items())}}

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Bodies (parsed JSON) of the messages accepted with 202, oldest first."""
        return self._messages.items

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received (including rejected ones), oldest first."""
        return self._recorder.items

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], Any], timeout: float = 10.0) -> Any:
        """Block until predicate(messages) is truthy and return it; AssertionError on timeout."""
        return self._messages.wait_for(predicate, timeout)

    def wait_for_request(self, predicate: Callable[[list[RecordedRequest]], Any], timeout: float = 10.0) -> Any:
        """Block until predicate(requests) is truthy and return it; AssertionError on timeout."""
        return self._recorder.wait_for(predicate, timeout)

    def fail_next(self, count: int = 1, status: int = 429, reset_in: int = 1) -> None:
        """Answer the next `count` mail sends with `status` (429, 500, 503...).

        A 429 carries X-RateLimit-Limit, X-RateLimit-Remaining: 0 and X-RateLimit-Reset
        (unix seconds, now + `reset_in`), with SendGrid's "too many requests" body.
        """
        with self._lock:
            self._failures.append([count, status, reset_in])

    def _take_failure(self) -> tuple[int, int] | None:
        with self._lock:
            for failure in self._failures:
                if failure[0] > 0:
                    failure[0] -= 1
                    return failure[1], failure[2]
        return None

    def _build_app(self) -> Flask:
        app = Flask("sendgrid_standin")
        app.json.sort_keys = False  # SendGrid's order: message, field, help

        @app.after_request
        def _record(response: Response) -> Response:
            if self.record:
                record_exchange(self._recorder, request, response)
            return response

        app.add_url_rule("/v3/mail/send", "mail_send", self._mail_send, methods=["POST"])
        return app

    def _mail_send(self) -> Response:
        if self.rate_limit is not None:
            wait = self.rate_limit.check()
            if wait is not None:     # sending works again from this Unix second, as the client sees time
                return _failure_response(429, wait, reset_at=math.ceil(time.time() + self.latency + wait))
        failure = self._take_failure()
        if failure is not None:
            return _failure_response(*failure)

        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if not scheme:
            return _errors_response(401, [{"field": None, "message": "authorization required"}])
        if scheme.lower() != "bearer" or key.strip() not in {self.api_key, *self.forbidden_keys}:
            return _errors_response(401, [_error("The provided authorization grant is invalid, expired, or revoked")])
        if key.strip() in self.forbidden_keys:
            return _errors_response(403, [{"field": None, "message": "access forbidden"}])

        try:
            mail = json.loads(request.get_data(cache=True))
        except ValueError:
            return _errors_response(400, [_error("Bad Request")])
        errors = schema_errors(mail) or semantic_errors(mail)
        if errors:
            return _errors_response(400, errors)

        if mail.get("mail_settings", {}).get("sandbox_mode", {}).get("enable"):
            return Response(status=200)
        with self._lock:
            self.accepted_per_ticket[(mail.get("custom_args") or {}).get("issue_key")] += 1
        if self.record:
            self._messages.add(copy.deepcopy(mail))
        return Response(status=202, headers={"X-Message-Id": secrets.token_urlsafe(16)[:22]},
                        mimetype="text/plain")


def _recipients(mail: dict[str, Any]) -> list[str]:
    return [a.get("email") for p in mail.get("personalizations", []) for a in p.get("to", [])]


def _failure_response(status: int, reset_in: int, reset_at: int | None = None) -> Response:
    messages = {400: "Bad Request", 429: "too many requests", 500: "internal server error",
                503: "service unavailable"}
    response = _errors_response(status, [{"field": None, "message": messages.get(status, "request failed")}])
    if status == 429:
        response.headers["X-RateLimit-Limit"] = "600"
        response.headers["X-RateLimit-Remaining"] = "0"
        response.headers["X-RateLimit-Reset"] = str(reset_at or int(time.time()) + reset_in)
    return response
