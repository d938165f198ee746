"""Sending email: SendGrid's v3 API through the official library, or a local outbox of .eml files."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from urllib.error import URLError

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Category, CustomArg, From, Header, Mail, ReplyTo, To

from .. import defaults
from ..exceptions import MailError, TransientError
from ..stores.budget import attempts

log = logging.getLogger("relance.mail")

INLINE_RETRY_AFTER_SECONDS = defaults.INLINE_RETRY_AFTER_SECONDS

# Carried by every email relance sends. Auto-Submitted (RFC 3834 section 5) says a program wrote it, so
# that out-of-office and other automatic replies are not sent back to it. Exchange and Outlook also honour
# X-Auto-Response-Suppress (MS-OXCMAIL 2.1.3.2.20): OOF and AutoReply only, not All, which would also
# suppress the non-delivery reports that tell SendGrid (and so relance) a customer's email bounced.
AUTOMATIC_HEADERS = {"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "OOF, AutoReply"}


@dataclass(frozen=True)
class Message:
    """One email, rendered. ``effect_id`` makes delivery idempotent where the backend allows.

    ``reply_to`` replaces the mailer's configured Reply-To (MAIL_REPLY_TO) for this message: a
    customer email's signed reply address. ``headers`` are added to AUTOMATIC_HEADERS.
    """

    to: tuple[str, ...]
    subject: str
    text: str
    html: str
    effect_id: str
    ticket: str | None = None
    category: str | None = None
    headers: dict = field(default_factory=dict)
    reply_to: str | None = None

    def all_headers(self) -> dict[str, str]:
        """The extra headers the email carries: AUTOMATIC_HEADERS, then the message's own."""
        return {**AUTOMATIC_HEADERS, **self.headers}


class SendGridMailer:
    """POST /v3/mail/send. 429/5xx raise TransientError (retry later, honouring X-RateLimit-Reset);
    400/401/403 raise MailError (no retry). With a ``budget`` (workers/stores/budget.py), each send
    waits for its turn in the budget all workers share, and a 429's reset pauses them all."""

    timing = None           # called with each send's seconds (the metrics' relance_remote_seconds)
    budget = None           # a RemoteBudget shared by every worker, set by the worker's context

    def __init__(self, api_key: str, host: str, sender: str, reply_to: str | None = None,
                 timeout: float = defaults.HTTP_TIMEOUT_SECONDS):
        self.client = SendGridAPIClient(api_key=api_key, host=host)
        self.client.client.timeout = timeout
        self.sender, self.reply_to = sender, reply_to

    def build(self, msg: Message) -> Mail:
        name, addr = parseaddr(self.sender)
        mail = Mail(from_email=From(addr, name or None), to_emails=[To(a) for a in msg.to],
                    subject=msg.subject, plain_text_content=msg.text, html_content=msg.html)
        reply_to = msg.reply_to or self.reply_to
        if reply_to:
            rname, raddr = parseaddr(reply_to)
            mail.reply_to = ReplyTo(raddr, rname or None)
        if msg.category:
            mail.category = Category(msg.category)
        for name, value in msg.all_headers().items():
            mail.header = Header(name, value)
        # SendGrid puts custom args at the top level of each Event Webhook event: how a bounce finds its ticket.
        for k, v in {"issue_key": msg.ticket, "relance_effect": msg.effect_id}.items():
            if v:
                mail.custom_arg = CustomArg(k, v)
        return mail

    def send(self, msg: Message) -> str:
        """Send once; return SendGrid's X-Message-Id. A rate-limit reset up to
        INLINE_RETRY_AFTER_SECONDS away is waited out here, a later one left to RQ's retry."""
        mail = self.build(msg)
        for _, last in attempts(self.budget):
            started = time.perf_counter()
            try:
                response = self.client.send(mail)
                if self.timing:
                    self.timing(time.perf_counter() - started)
                return response.headers.get("X-Message-Id", "") if response.headers else ""
            except HTTPError as e:
                body = e.body.decode(errors="replace") if isinstance(e.body, bytes) else str(e.body)
                if e.status_code != 429 and e.status_code < 500:
                    log.error("SendGrid refused %s for %s (%s): %s", msg.category, msg.ticket, e.status_code, body)
                    raise MailError(f"SendGrid refused the message ({e.status_code}): {body[:300]}",
                                    e.status_code) from e
                wait = _reset_in(e.headers)
                if self.budget is not None and e.status_code == 429 and wait is not None:
                    self.budget.pause(wait)             # every worker waits, not only this send
                # Only a 429 is repeated in place: after a 5xx SendGrid may have taken the mail.
                if e.status_code == 429 and wait is not None and wait <= INLINE_RETRY_AFTER_SECONDS \
                        and not last:
                    log.warning("SendGrid answered %s; waiting %.1fs for its rate limit to reset", e.status_code, wait)
                    if self.budget is None:
                        time.sleep(wait)                # else the budget waits, before the next send
                    continue
                raise TransientError(f"SendGrid {e.status_code}: {body[:300]}", retry_after=wait) from e
            except (URLError, OSError) as e:
                raise TransientError(f"SendGrid unreachable: {e}") from e
        raise AssertionError("unreachable")


def _reset_in(headers) -> float | None:
    """Seconds until SendGrid's X-RateLimit-Reset (a Unix time), or a Retry-After in seconds."""
    headers = headers or {}
    reset, retry_after = headers.get("X-RateLimit-Reset"), headers.get("Retry-After")
    try:
        if reset:
            return max(0.0, float(reset) - time.time())
        if retry_after:
            return float(retry_after)
    except ValueError:
        return None
    return None


class OutboxMailer:
    """Writes each message as a .eml file a mail client can open. One file per effect."""

    timing = None

    def __init__(self, directory: Path, sender: str, reply_to: str | None = None):
        self.directory = Path(directory)
        self.sender, self.reply_to = sender, reply_to

    def path_for(self, msg: Message) -> Path:
        return self.directory / f"{msg.effect_id.replace(':', '_').replace('|', '_')}.eml"

    def send(self, msg: Message) -> str:
        """Write the message; MailError (not retried) if it cannot be a valid email."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_for(msg)
        try:
            email = self._compose(msg)
        except ValueError as e:     # a header the email package refuses (a line break in an address, say)
            raise MailError(f"not a valid message: {e}") from e
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(email)
        os.replace(tmp, path)   # a reader never sees half a file
        return str(path)

    def _compose(self, msg: Message) -> bytes:
        """The message as an .eml file's bytes; ValueError for a header the email package refuses."""
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = ", ".join(msg.to)
        email["Subject"] = msg.subject
        email["Date"] = formatdate(localtime=True)
        email["Message-ID"] = make_msgid(domain="relance.local")
        reply_to = msg.reply_to or self.reply_to
        if reply_to:
            email["Reply-To"] = reply_to
        for name, value in msg.all_headers().items():
            email[name] = value
        if msg.ticket:
            email["X-Relance-Ticket"] = msg.ticket
        email["X-Relance-Effect"] = msg.effect_id
        email.set_content(msg.text)
        email.add_alternative(msg.html, subtype="html")
        return bytes(email)      # serialising is where a bad header shows: once


def make_mailer(settings):
    if settings.sendgrid_configured:
        return SendGridMailer(settings.reveal("sendgrid_api_key"), settings.sendgrid_api_host, settings.mail_from,
                              settings.mail_reply_to)
    return OutboxMailer(settings.outbox_dir, settings.mail_from, settings.mail_reply_to)
