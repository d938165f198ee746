"""RQ job: a customer's reply by email (SendGrid Inbound Parse) becomes a JIRA comment, then a
customer comment for the rules.

The web edge (webhooks/sendgrid.py) checked the reply address and stored the raw post; this job
parses it, refuses what must not reach JIRA (each refusal on the ticket's timeline), uploads the
attachments, posts the comment, and feeds the rules a comment by the customer, so the default
rules move a ticket waiting for feedback back to Open. Each step is an effect in the ledger and
the decision is stored per delivery: a SendGrid retry or a job retry acts once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import replace
from datetime import datetime, timezone

from . import defaults
from .actions import Ticket
from .context import Context, current
from .core.events import Comment, Person, TicketEvent
from .core.inbound import (Attachment, InboundMail, attachments_to_upload, auto_reply_reason, authentication_problem,
                           parse_inbound, reply_of)
from .core.replies import ReplyToken, find_reply_address, read_reply_address
from .exceptions import EffectBusy, InboundError, JiraError, ReplyRefused
from .jobs import _apply_delivery, _in_turn, _jira_issue, _time_left
from .logs import about
from .rendering.markup import wiki_plain

log = logging.getLogger("relance.replies")

REPLY_EVENT = "email:reply"         # the webhook_event of a reply by email, on the timeline


def process_reply(delivery_id: str) -> str:
    """RQ job: see ``_process_reply``; its log lines name the delivery."""
    with about(delivery=delivery_id):
        return _process_reply(delivery_id)


def _process_reply(delivery_id: str) -> str:
    """Post one inbound reply to its ticket and let the rules see it, once. Returns a short outcome.

    Refused (kept on the ticket's timeline with the reason, nothing posted): a sender who is not
    the address the reply address was issued to (unless REPLY_ACCEPT_ANY_SENDER), an automatic
    message (out-of-office, bounce, list), a failed SPF/DKIM verdict, a flood from one sender.
    """
    ctx = current()
    if ctx.deliveries.is_done(delivery_id):
        return "already processed"
    stored = ctx.deliveries.post(delivery_id)
    if stored is None:
        log.warning("reply %s: post expired before processing", delivery_id)
        return "expired"
    try:
        mail = parse_inbound(*stored)
        token = _token(ctx, mail)
    except (InboundError, ReplyRefused) as e:
        # The edge checks the address before accepting; this is a key rotated since, or a bad post.
        ctx.deliveries.mark_done(delivery_id, f"refused: {e}")
        _count(ctx, "refused")
        return f"refused: {e}"
    with about(ticket=token.key):
        _in_turn(token.key)         # after the jobs of this ticket dequeued before it, in this worker
        return _take_reply(ctx, delivery_id, token, mail)


def ticket_of_post(ctx: Context, delivery_id: str) -> str | None:
    """The ticket a stored reply is for (its signed reply address), or None if the post is gone.
    Raises InboundError or ReplyRefused for a post that names none."""
    stored = ctx.deliveries.post(delivery_id)
    return _token(ctx, parse_inbound(*stored)).key if stored else None


def _token(ctx: Context, mail: InboundMail) -> ReplyToken:
    settings = ctx.settings
    address = find_reply_address((*mail.envelope_to, *mail.to, *mail.cc), settings.reply_domain or "")
    if address is None:
        raise ReplyRefused("no_address", f"no reply address at {settings.reply_domain} among the recipients")
    return read_reply_address(settings.reveal("secret_key"), settings.reply_domain, address, time.time(),
                              settings.reply_token_days)


def _refusal(ctx: Context, delivery_id: str, token: ReplyToken, mail: InboundMail) -> tuple[str, str] | None:
    """(reason code, why) if this mail must not reach JIRA, else None."""
    why = auto_reply_reason(mail)
    if why:
        return "auto_reply", why
    why = authentication_problem(mail)
    if why:
        return "unauthenticated", why
    if not ctx.settings.reply_accept_any_sender and not token.issued_to(ctx.settings.reveal("secret_key"),
                                                                        mail.sender or ""):
        return "wrong_sender", (f"sent from {mail.sender or 'no address'}, not from the address the reply address "
                                "was sent to (REPLY_ACCEPT_ANY_SENDER=1 accepts colleagues)")
    if not _admitted(ctx, delivery_id, mail.sender):
        return "flood", (f"more than {defaults.REPLY_FLOOD_PER_HOUR} replies from {mail.sender} within an hour")
    return None


def _admitted(ctx: Context, delivery_id: str, sender: str) -> bool:
    """True while the sender has sent at most REPLY_FLOOD_PER_HOUR replies this past hour.

    Idempotent: the same delivery asked again gets the same answer (its place in the window).
    """
    key = "relance:replies:from:" + hashlib.sha256((sender or "").lower().encode()).hexdigest()[:24]
    now = time.time()
    pipe = ctx.redis.pipeline()
    pipe.zremrangebyscore(key, "-inf", now - 3600)
    pipe.zadd(key, {delivery_id: now}, nx=True)
    pipe.zrank(key, delivery_id)
    pipe.expire(key, 3600)
    rank = pipe.execute()[2]
    return rank is not None and rank < defaults.REPLY_FLOOD_PER_HOUR


def _take_reply(ctx: Context, delivery_id: str, token: ReplyToken, mail: InboundMail) -> str:
    key = token.key
    refused = _refusal(ctx, delivery_id, token, mail)
    if refused:
        reason, why = refused
        ctx.audit.record(key, "reply refused", delivery=delivery_id, reason=reason, why=why, sender=mail.sender)
        ctx.deliveries.mark_done(delivery_id, f"refused ({reason}): {why}")
        _count(ctx, reason)
        log.info("reply refused (%s)", reason)
        return f"refused: {reason}"

    issue = None
    if ctx.effects.jira.dry_run:
        ticket = Ticket.from_snapshot(ctx.tickets.snapshot(key) or {"key": key})
        ticket.status = ctx.tickets.memory(key).status or ticket.status
    else:
        issue = _jira_issue(ctx, key)
        if issue is None:
            why = "JIRA does not show the ticket (deleted, moved, or never existed)"
            ctx.audit.record(key, "reply refused", delivery=delivery_id, reason="no_ticket", why=why)
            ctx.deliveries.mark_done(delivery_id, f"refused (no_ticket): {why}")
            _count(ctx, "no_ticket")
            return "refused: no_ticket"
        ticket = Ticket.from_issue(key, issue)
    author = _author(ctx, token, mail, ticket)
    locale, time_zone = ctx.effects.rules.audience(ticket.project)
    languages = tuple(dict.fromkeys(x.replace("-", "_").split("_")[0]
                                    for x in (author.locale, locale, "en") if x))
    words = reply_of(mail, languages)
    files = attachments_to_upload(mail, words)
    words, whole = _fitting(words, mail, {a.filename.lower() for a in files})
    if whole is not None:
        files = (*files, whole)
    ctx.audit.record(key, "reply received", delivery=delivery_id, sender=mail.sender, subject=mail.subject,
                     attachments=len(files))
    names = _upload(ctx, delivery_id, key, files)
    received = datetime.now(timezone.utc)
    body = ctx.effects.renderer.render_text("jira", "email_reply", locale, {
        "author_name": author.display_name or mail.sender_name or mail.sender, "sender": mail.sender,
        "received": received, "reply": words, "attachment_links": [_link(n) for n in names], "subject": mail.subject,
        "whole_reply": whole.filename if whole is not None else None,
    }, time_zone)
    comment_id = _post_comment(ctx, delivery_id, key, body)
    if issue is not None and comment_id:
        issue = _jira_issue(ctx, key) or issue      # with the comment, for the rules' confirmation
    event = TicketEvent(
        webhook_event=REPLY_EVENT, issue_key=key, issue_id=None, timestamp_ms=int(received.timestamp() * 1000),
        status=ticket.status, summary=ticket.summary or None, priority=ticket.priority, labels=ticket.labels,
        project=ticket.project, issue_type=ticket.issue_type, reporter=ticket.reporter, assignee=ticket.assignee,
        site_url=ticket.site_url, actor=author, comment=Comment(id=comment_id, body=words, author=author, created=received.isoformat(),
                                      via_email=True))
    _count(ctx, "posted")
    return _apply_delivery(ctx, delivery_id, key, event, issue)


def _fitting(words: str, mail: InboundMail, taken: set[str]) -> tuple[str, Attachment | None]:
    """The reply cut to what a JIRA comment holds (JIRA refuses a comment over 32,767 characters),
    and then the whole mail's text as a file to attach beside it; else the reply as it is, and None."""
    if len(words) <= defaults.REPLY_COMMENT_MAX_CHARS:
        return words, None
    cut = words[:defaults.REPLY_COMMENT_MAX_CHARS].rsplit("\n", 1)[0]
    name = next(n for n in ("reply.txt", *(f"reply ({i}).txt" for i in range(2, 100))) if n not in taken)
    text = mail.text or words
    return cut + "\n\n(…)", Attachment(name, "text/plain", text.encode("utf-8"))


def _link(filename: str) -> str:
    """JIRA wiki for an attachment of the ticket: a link, unless the name holds characters that end one."""
    return wiki_plain(filename) if set(filename) & set("[]{}|!^") else f"[^{filename}]"


def _author(ctx: Context, token: ReplyToken, mail: InboundMail, ticket: Ticket) -> Person:
    """Who wrote the reply: the reporter when the reply comes from the address relance wrote to,
    else the sender as the mail names them (a colleague, with REPLY_ACCEPT_ANY_SENDER)."""
    reporter = ticket.reporter
    if reporter is not None and token.issued_to(ctx.settings.reveal("secret_key"), mail.sender or ""):
        return replace(reporter, email=reporter.email or mail.sender,
                       display_name=reporter.display_name or mail.sender_name or None)
    return Person(email=mail.sender or None, display_name=mail.sender_name or None)


def _upload(ctx: Context, delivery_id: str, key: str, files) -> list[str]:
    """Upload ``files`` (what the customer attached, and the images the reply shows), each once.
    Returns the names JIRA knows them by; one JIRA refuses (too large, say) is noted on the timeline."""
    names = []
    for index, attachment in enumerate(files):
        effect_id = f"{delivery_id}:reply:attachment:{index}"
        entry = ctx.effects.ledger.get(effect_id)
        if entry.get("state") == "done":
            names.append(attachment.filename)
            continue
        if entry.get("state") in ("failed", "skipped"):
            continue
        outcome = _once(ctx, key, effect_id, {"attachment": attachment.filename, "bytes": len(attachment.data)},
                        lambda a=attachment: _attach(ctx, key, a))
        if outcome == "done":
            names.append(attachment.filename)
    return names


def _attach(ctx: Context, key: str, attachment) -> tuple[str, str]:
    if ctx.effects.jira.dry_run:
        return "done", f"dry run: would attach {attachment.filename} ({len(attachment.data)} bytes)"
    try:
        ctx.effects.jira.add_attachment(key, attachment.filename, attachment.data, attachment.content_type)
    except JiraError as e:
        return "failed", f"JIRA refused {attachment.filename}: {e}"
    return "done", f"attached {attachment.filename} ({len(attachment.data)} bytes)"


def _post_comment(ctx: Context, delivery_id: str, key: str, body: str) -> str | None:
    """Post the reply as a comment, once; the JIRA comment's id (None in dry run)."""
    effect_id = f"{delivery_id}:reply:comment"
    entry = ctx.effects.ledger.get(effect_id)
    if entry.get("state") != "done":
        _once(ctx, key, effect_id, {"comment": body}, lambda: _comment(ctx, effect_id, key, body))
        entry = ctx.effects.ledger.get(effect_id)
    return entry.get("comment_id") or None


def _comment(ctx: Context, effect_id: str, key: str, body: str) -> tuple[str, str]:
    body = ctx.effects.ledger.begin(effect_id, {"comment": body})["comment"]     # a retry posts the same words
    if ctx.effects.jira.dry_run:
        return "done", "dry run: would comment"
    if ctx.effects.ledger.attempt(effect_id) > 0:
        mine = _own_comment(ctx, key, body)
        if mine:
            _keep_comment_id(ctx, effect_id, mine)
            return "done", "reply posted (JIRA shows it after an unclear answer)"
    created = ctx.effects.jira.add_comment(key, body) or {}
    _keep_comment_id(ctx, effect_id, str(created.get("id") or ""))
    return "done", "reply posted"


def _own_comment(ctx: Context, key: str, body: str) -> str | None:
    """The id of a comment relance's account already posted with ``body``, if JIRA shows one."""
    mine = ctx.effects.jira.own_accounts()
    for c in reversed((((_jira_issue(ctx, key) or {}).get("fields") or {}).get("comment") or {}).get("comments")
                      or ()):
        author = c.get("author") or {}
        if str(c.get("body", "")).strip() == body.strip() and \
                {author.get("accountId"), author.get("name"), author.get("key")} & mine:
            return str(c.get("id"))
    return None


def _keep_comment_id(ctx: Context, effect_id: str, comment_id: str) -> None:
    ctx.redis.hset(ctx.effects.ledger.key(effect_id), "comment_id", comment_id)


def _once(ctx: Context, key: str, effect_id: str, intent: dict, do) -> str:
    """Perform ``do`` (-> (state, detail)) once for ``effect_id``, claimed while it runs; its final state."""
    ledger = ctx.effects.ledger
    token = ledger.claim(effect_id, _time_left())
    if token is None:
        raise EffectBusy(f"{effect_id} is being performed by another execution")
    try:
        state = ledger.get(effect_id).get("state")
        if state in ("done", "failed", "skipped"):
            return state
        ledger.begin(effect_id, intent)
        state, detail = do()
        ledger.finish(effect_id, state, detail)
        ctx.audit.record(key, f"effect {state}", effect=effect_id, action="reply", detail=detail)
        return state
    finally:
        ledger.release(effect_id, token)


def _count(ctx: Context, outcome: str) -> None:
    if ctx.effects.metrics is not None:
        ctx.effects.metrics.count("replies", outcome)
