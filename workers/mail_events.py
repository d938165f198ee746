"""RQ job: SendGrid's Event Webhook, one stored batch at a time (docs/email.md, docs/rules.md).

The web edge stores each batch (a JSON array of events) under a delivery id and
queues ``process_mail_events``. Each event about an email relance sent (its custom
args ``issue_key`` and ``relance_effect``) that says the email was delivered,
deferred, bounced, blocked, dropped or reported as spam goes on the ticket's
timeline next to the email's effect, is counted, and fires the rules on
``when: {email: bounced}``, once per event (``sg_event_id``) however often
SendGrid sends it. Opens and clicks are ignored. Exceptions are never swallowed:
RQ retries the job, and what was done is not done again.
"""

from __future__ import annotations

import logging
from collections import Counter

from .context import Context, current
from .core.decisions import decide_mail_event, view_of
from .core.mail_events import MailEvent, audience_of, cause_of, parse_mail_events
from .jobs import _time_left, read_delivery, ticket_now
from .logs import about
from .stores.mail_events import PREFIX, MailEventStore

log = logging.getLogger("relance.mail_events")

# The timeline entry of each event relance keeps.
TITLES = {"delivered": "email delivered", "deferred": "email deferred", "bounced": "email bounced",
          "blocked": "email blocked", "dropped": "email dropped", "spamreport": "email reported as spam"}


def process_mail_events(delivery_id: str) -> str:
    """RQ job: take the events of one stored Event Webhook batch; returns a short outcome.

    Idempotent: an event already taken (in this batch or another) is a duplicate;
    a retry after a crash finishes what the crashed run began.
    """
    with about(delivery=delivery_id):
        ctx = current()
        events, outcome = read_delivery(ctx, delivery_id, parse_mail_events)
        if outcome is not None:
            return outcome
        store = MailEventStore(ctx.redis)
        outcomes = Counter(_take(ctx, store, delivery_id, event) for event in events)
        summary = f"{len(events)} events" + "".join(f", {n} {what}" for what, n in sorted(outcomes.items()))
        ctx.deliveries.mark_done(delivery_id, summary)
        return summary


def _take(ctx: Context, store: MailEventStore, delivery_id: str, event: MailEvent) -> str:
    """Take one event: timeline, count and rules; return what became of it (for the delivery's outcome)."""
    if not event.relance_s:
        return "not relance's"
    if event.kind not in TITLES:
        return "not tracked"            # processed, open, click, unsubscribe, ...
    stored = store.get(event.ref)
    if stored is not None and stored["done"]:
        return "duplicates"
    key = event.issue_key
    with about(ticket=key):
        ticket, taken = None, False
        if stored is None:
            email = _email_of(ctx, event)
            if email is None:
                log.info("%s event for an email relance does not know (%s): ignored", event.kind, event.effect_id)
                return "unknown emails"
            ticket, stored, taken = _decide_and_record(ctx, store, delivery_id, event, email)
        if stored["rules"]:
            _perform(ctx, event, stored, ticket)
        store.mark_done(event.ref)
    return event.kind if taken else "duplicates"


def _email_of(ctx: Context, event: MailEvent) -> dict | None:
    """What the ledger says of the email the event is about, or None if it is not an email relance sent
    for this ticket (forgotten after the retention, or another sender's custom args)."""
    intent = ctx.effects.ledger.get(event.effect_id).get("intent") or {}
    sent = ctx.effects.ledger.sent(event.effect_id) or {}
    if "email" not in intent and not sent:
        return None
    if sent.get("ticket") and sent["ticket"] != event.issue_key:
        return None
    return {"intent": intent, "template": sent.get("template") or intent.get("email"),
            "subject": sent.get("subject"), "sent_at": sent.get("sent_at")}


def _rule_recipients(ctx: Context, effect_id: str) -> tuple[str, ...] | None:
    """The ``to`` of the email action that made the effect ``<prefix>:<rule>:<index>``, if the rule is still there."""
    _, rule_name, index = (["", "", ""] + effect_id.split(":"))[-3:]
    rule = ctx.rules.rule(rule_name)
    if rule is None or not index.isdigit() or int(index) >= len(rule.do) or not rule.do[int(index)].email:
        return None
    return rule.do[int(index)].email.recipients


def _decide_and_record(ctx: Context, store: MailEventStore, delivery_id: str, event: MailEvent, email: dict):
    """Decide the event's rules, then in one transaction: the event taken, its timeline entry, its count
    and the rules it fires. Returns (the ticket if read, the stored record, whether this run took it)."""
    key, intent = event.issue_key, email["intent"]
    listening = event.undelivered and any(r.when.kind == "email" for r in ctx.rules.rules)
    ticket = ticket_now(ctx, key) if listening and intent.get("audience") != "support" else None
    reporter = ticket.reporter if ticket else None
    audience = audience_of(intent, _rule_recipients(ctx, event.effect_id), event.to,
                           reporter.email if reporter else None)
    fire, skipped = decide_mail_event(ctx.rules, event.kind, audience, view_of(ctx.rules, ticket) if ticket else None)
    facts = {"kind": event.kind, "to": event.to, "reason": event.reason, "status": event.status,
             "cause": cause_of(event), "template": email["template"], "subject": email["subject"],
             "sent_at": email["sent_at"], "effect": event.effect_id}
    with ctx.tickets.lock(key):
        found = store.get(event.ref)
        if found is not None:                   # another batch holding the same event took it meanwhile
            return ticket, found, False
        pipe = ctx.redis.pipeline(transaction=True)
        store.record(event.ref, key, fire, facts, pipe)
        ctx.audit.record(key, TITLES[event.kind], pipe=pipe, effect=event.effect_id, template=email["template"],
                         audience=audience, delivery=delivery_id, **event.facts())
        ctx.effects.metrics.count("mail_events", event.kind, pipe=pipe)
        for rule in fire:
            ctx.audit.record(key, "rule fired", pipe=pipe, rule=rule, delivery=delivery_id, because=TITLES[event.kind])
        for rule, why in skipped:
            ctx.audit.record(key, "rule skipped", pipe=pipe, rule=rule, why=why)
        pipe.execute()
    return ticket, {"ticket": key, "rules": fire, "facts": facts, "done": False}, True


def _perform(ctx: Context, event: MailEvent, stored: dict, ticket=None) -> None:
    """Perform the rules the event fires, each effect once (``mail-<ref>:<rule>:<index>`` in the ledger)."""
    key = event.issue_key
    ticket = ticket or ticket_now(ctx, key)
    if ticket is None:
        for rule in stored["rules"]:
            ctx.audit.record(key, "rule skipped", rule=rule, why="JIRA no longer shows the ticket")
        return
    ticket.email_event = stored["facts"]
    for rule_name in stored["rules"]:
        rule = ctx.rules.rule(rule_name)
        if rule is None:
            ctx.audit.record(key, "rule gone", rule=rule_name, effects=f"{PREFIX}{event.ref}")
            continue
        ctx.effects.perform_rule(rule_name, list(enumerate(rule.do)), ticket, f"{PREFIX}{event.ref}", _time_left())
