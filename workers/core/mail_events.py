"""SendGrid Event Webhook bodies, read. Pure: no I/O.

A body is a JSON array of events. Custom args sent with a message (relance sends
``issue_key`` and ``relance_effect``) come back as top-level keys of each event;
``sg_event_id`` names an event across redeliveries; ``event`` is lower case in
today's docs and capitalised in old examples; a bounce whose ``type`` is
``blocked`` is a block; ``attempt`` (of a deferral) is a string or a number.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from ..exceptions import PayloadError
from .events import ISSUE_KEY

# SendGrid's event name -> the kind relance records (None: the event is not a delivery fact relance keeps;
# opens and clicks are left alone on purpose: nobody asked relance to watch its readers).
TIMELINE_KINDS = ("delivered", "deferred", "bounced", "blocked", "dropped", "spamreport")
# What ``when: {email: bounced}`` answers: the email never reached the customer.
UNDELIVERED = frozenset({"bounced", "blocked", "dropped"})

_SAFE_REF = re.compile(r"[A-Za-z0-9_-]{1,80}")
_ENHANCED_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MAX_TEXT = 500                 # SMTP responses can be long; the timeline and comments keep this much


@dataclass(frozen=True)
class MailEvent:
    """One event of a batch, as relance reads it."""

    ref: str                    # sg_event_id when it is safe in ids and keys, else a hash of it (or of the event)
    sg_event_id: str | None
    kind: str                   # one of TIMELINE_KINDS, or SendGrid's own name (lower case) for the others
    issue_key: str | None       # the custom arg, when it is a JIRA issue key
    effect_id: str | None       # the custom arg relance_effect: the ledger id of the email
    to: str | None              # the recipient the event is about
    reason: str | None = None   # bounce, block and drop: why (SMTP reply or SendGrid's reason)
    response: str | None = None  # delivered and deferred: the receiving server's reply
    status: str | None = None   # enhanced status code (5.1.1), from ``status`` or found in the reason
    attempt: int | str | None = None   # deferred: which attempt this was
    classification: str | None = None  # bounce_classification (newer accounts)
    occurred_at: float | None = None   # epoch seconds, when SendGrid saw it

    @property
    def relance_s(self) -> bool:
        """Whether the event is about an email relance sent (it carries both of relance's custom args)."""
        return self.issue_key is not None and self.effect_id is not None

    @property
    def undelivered(self) -> bool:
        return self.kind in UNDELIVERED

    def facts(self) -> dict:
        """What the timeline keeps of the event (the fields it has)."""
        out = {"to": self.to, "reason": self.reason, "response": self.response, "status": self.status,
               "attempt": self.attempt, "classification": self.classification, "occurred_at": self.occurred_at,
               "sg_event_id": self.sg_event_id}
        return {k: v for k, v in out.items() if v not in (None, "")}


def parse_mail_events(body) -> list[MailEvent]:
    """The events of an Event Webhook body (bytes, text, or the decoded list).

    Raises PayloadError when the body is not a JSON array. Elements that are not
    objects are left out (an event must be an object to mean anything).
    """
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise PayloadError(f"not JSON: {e}") from None
    if not isinstance(body, list):
        raise PayloadError(f"an Event Webhook body is a JSON array of events, not {type(body).__name__}")
    return [_event(e) for e in body if isinstance(e, dict)]


def _text(value, limit: int = _MAX_TEXT) -> str | None:
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    out = str(value).strip()
    return out[:limit] or None


def _event(raw: dict) -> MailEvent:
    name = (_text(raw.get("event"), 40) or "").lower()
    kind = {"bounce": "blocked" if (_text(raw.get("type"), 40) or "").lower() == "blocked" else "bounced"}.get(
        name, name)
    sg_event_id = _text(raw.get("sg_event_id"), 200)
    key = (_text(raw.get("issue_key"), 80) or "").upper()
    reason = _text(raw.get("reason"))
    status = _text(raw.get("status"), 20)
    if status is None and reason:
        found = _ENHANCED_STATUS.search(reason)
        status = found.group(0) if found else None
    return MailEvent(
        ref=event_ref(sg_event_id, raw), sg_event_id=sg_event_id, kind=kind,
        issue_key=key if ISSUE_KEY.fullmatch(key) else None, effect_id=_text(raw.get("relance_effect"), 300),
        to=_text(raw.get("email"), 320), reason=reason, response=_text(raw.get("response")), status=status,
        attempt=_attempt(raw.get("attempt")), classification=_text(raw.get("bounce_classification"), 80),
        occurred_at=_seconds(raw.get("timestamp")))


def event_ref(sg_event_id: str | None, raw: dict | None = None) -> str:
    """A name for the event that is safe in effect ids, RQ job ids and Redis keys: the sg_event_id itself
    when it is letters, digits, ``_`` and ``-``; else a hash of it (SendGrid's docs show ids ending in
    ``==``); else, for an event without one, a hash of the whole event."""
    if sg_event_id and _SAFE_REF.fullmatch(sg_event_id):
        return sg_event_id
    seed = sg_event_id if sg_event_id else json.dumps(raw or {}, sort_keys=True, default=str)
    return "h" + hashlib.sha256(seed.encode()).hexdigest()[:40]


def _attempt(value) -> int | str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    text = _text(value, 20)
    return int(text) if text and text.isdigit() else text


def _seconds(value) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 0 < seconds < 1e11 else None      # seconds, not milliseconds or garbage


# -- what support is told -----------------------------------------------------

_DROP_CAUSES = {"bounced address": "bounced_before", "invalid": "invalid_address",
                "unsubscribed address": "unsubscribed", "spam reporting address": "reported_spam",
                "spam content": "spam_content"}
_CLASSIFICATIONS = {"invalid address": "mailbox_unavailable", "mailbox unavailable": "mailbox_unavailable",
                    "content": "refused", "reputation": "refused", "frequency or volume too high": "refused",
                    "technical failure": "technical"}
_STATUS_CAUSES = {("1", "1"): "mailbox_unavailable", ("1", "6"): "mailbox_unavailable",
                  ("2", "1"): "mailbox_unavailable", ("1", "2"): "no_mail_server", ("1", "10"): "no_mail_server",
                  ("4", "4"): "no_mail_server", ("2", "2"): "mailbox_full", ("7", "1"): "refused"}


def cause_of(event: MailEvent) -> str | None:
    """Why an email did not arrive, as a word templates translate: ``mailbox_unavailable``, ``mailbox_full``,
    ``no_mail_server``, ``refused``, ``technical``, and for drops ``bounced_before``, ``invalid_address``,
    ``unsubscribed``, ``reported_spam``, ``spam_content``; None when the facts do not say.

    Read from SendGrid's drop reason, then its bounce classification, then the enhanced status code
    (RFC 3463: 5.1.1 no such mailbox, 5.2.2 mailbox full, 5.7.x refused by policy).
    """
    if event.kind == "dropped" and event.reason:
        cause = _DROP_CAUSES.get(event.reason.lower())
        if cause:
            return cause
    cause = _CLASSIFICATIONS.get((event.classification or "").lower())
    if cause:
        return cause
    found = _ENHANCED_STATUS.search(event.status or "")
    if found:
        subject, detail = found.group(2), found.group(3)
        return _STATUS_CAUSES.get((subject, detail)) or ("refused" if subject == "7" else None)
    if event.reason and "mx" in event.reason.lower().split():
        return "no_mail_server"
    return None


def audience_of(intent: dict, rule_recipients: tuple[str, ...] | None, recipient: str | None,
                reporter_email: str | None) -> str:
    """Whom the email was for: ``customer`` or ``support``.

    The ledger's word first (``intent["audience"]``, recorded when the email was sent); for an email
    sent before relance recorded it, ``customer`` when the rule sent it to the reporter, or when the
    address the event is about is the reporter's; else ``support``.
    """
    said = intent.get("audience")
    if said in ("customer", "support"):
        return said
    if rule_recipients and "reporter" in rule_recipients:
        return "customer"
    if recipient and reporter_email and recipient.casefold() == reporter_email.casefold():
        return "customer"
    return "support"
