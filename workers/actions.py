"""Performing effects: each planned action of a rule, once, through JIRA and the mailer.

Actions of one rule run in order. A permanent failure (JIRA or the mail
provider refusing for good) is recorded with its reason and stops the rule's
later actions; a transient one raises, so RQ retries the job and finished
effects are skipped the second time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from email_validator import EmailNotValidError, validate_email

from .stores.audit import Audit
from .rendering.emails import Renderer
from .core.events import Comment, Person, TicketEvent
from .exceptions import EffectBusy, JiraError, MailError, NotifyError, RecipientInvalid, RecipientUnknown
from .failures import RULE_FUNC
from .stores.ledger import FINISHED, EffectLedger
from .clients.mail import Message, OutboxMailer
from .core.replies import ReplyAddresses
from .core.rules import Action, CommentAction, RuleSet, TransitionAction

log = logging.getLogger("relance.actions")


@dataclass
class Ticket:
    """The ticket as known when acting.

    With JIRA configured, every field that decides to whom and what is sent
    (summary, status, reporter, assignee, comments) comes from JIRA itself
    (``from_issue``), never from a webhook body; in dry run, from the deliveries.
    """

    key: str
    summary: str = ""
    status: str | None = None
    priority: str | None = None
    labels: tuple[str, ...] = ()
    reporter: Person | None = None
    assignee: Person | None = None
    comments: tuple[Comment, ...] = ()
    site_url: str | None = None
    project: str | None = None
    issue_type: str | None = None
    event: TicketEvent | None = None      # what triggered the rule, if an event did
    since_ms: int | None = None           # when the ticket entered its current state
    times_reopened: int = 0
    email_event: dict | None = None       # what SendGrid said of an email, when that triggered the rule

    @classmethod
    def from_snapshot(cls, snap: dict, **extra) -> "Ticket":
        return cls(key=snap["key"], summary=snap.get("summary") or "", status=snap.get("status"),
                   priority=snap.get("priority"), labels=tuple(snap.get("labels") or ()),
                   reporter=Person.from_dict(snap.get("reporter")), assignee=Person.from_dict(snap.get("assignee")),
                   site_url=snap.get("site_url"), project=snap.get("project"), issue_type=snap.get("issue_type"),
                   **extra)

    @classmethod
    def from_issue(cls, key: str, issue: dict, event: TicketEvent | None = None, **extra) -> "Ticket":
        """The ticket as JIRA shows it (GET /issue/{key}). The event keeps only what JIRA confirms:
        its comment is JIRA's comment of the same id, or none."""
        from .core.events import _comment, _person   # same readers as for webhook bodies
        f = issue.get("fields") or {}
        comments = tuple(c for c in map(_comment, (f.get("comment") or {}).get("comments") or ()) if c)
        if event is not None and event.comment is not None:
            confirmed = next((c for c in comments if event.comment.id and c.id == event.comment.id), None)
            if confirmed is not None and event.comment.via_email:    # posted by relance for the customer
                confirmed = replace(confirmed, author=event.comment.author, via_email=True)
            event = replace(event, comment=confirmed)
        labels = f.get("labels")
        return cls(key=issue.get("key") or key, summary=f.get("summary") or "",
                   status=(f.get("status") or {}).get("name"), priority=(f.get("priority") or {}).get("name"),
                   labels=tuple(str(x) for x in labels) if isinstance(labels, list) else (),
                   reporter=_person(f.get("reporter")), assignee=_person(f.get("assignee")), comments=comments,
                   project=(f.get("project") or {}).get("key"), issue_type=(f.get("issuetype") or {}).get("name"),
                   event=event, **extra)


def _name(p: Person | None) -> str:
    return (p.display_name or p.name or p.email or "") if p else ""


def _moment(ms: int | None) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc) if ms else datetime.now(timezone.utc)


@dataclass
class Effects:
    rules: RuleSet
    jira: object
    mailer: object
    renderer: Renderer
    ledger: EffectLedger
    audit: Audit
    jira_base_url: str | None = None
    notifier: object = None
    metrics: object = None
    failures: object = None     # where a rule whose effect failed for good is kept for a retry
    replies: ReplyAddresses | None = None   # signs customer emails' Reply-To (REPLY_DOMAIN); None: no replies

    @staticmethod
    def effect_ids(rule: str, steps, effect_prefix: str) -> list[str]:
        """The ledger ids of ``steps`` ([(index, Action)]) of ``rule`` performed under ``effect_prefix``."""
        return [f"{effect_prefix}:{rule}:{index}" for index, _ in steps]

    def perform_rule(self, rule: str, steps, ticket: Ticket, effect_prefix: str,
                     claim_seconds: float | None = None, claims=None, writes=None) -> None:
        """Perform ``steps`` ([(index, Action)]) of one rule for ``ticket``, each once.

        The rule's effects are claimed for ``claim_seconds`` (the time the job has left),
        and read, in one round trip (or were, by the caller: ``claims``, from
        ``EffectLedger.claim_all`` of ``effect_ids``); each claim is given back with the
        effect's outcome. Raises EffectBusy, before performing any, if another execution
        is performing one of them now, and TransientError when JIRA or the mail provider
        should be asked again later. ``writes``: a pipeline the caller executes soon after:
        the outcome of an effect that changes nothing outside relance (a dry-run JIRA
        action, mail to the outbox, a skip) is added to it rather than written at once;
        should it be lost, the effect is simply performed again.
        """
        ids = self.effect_ids(rule, steps, effect_prefix)
        claims = claims if claims is not None else self.ledger.claim_all(ids, claim_seconds)
        held = {effect_id: token for effect_id, (token, _) in zip(ids, claims) if token is not None}
        try:
            busy = [i for i, (token, entry) in zip(ids, claims) if token is None and entry.get("state") not in FINISHED]
            if busy:
                raise EffectBusy(f"{busy[0]} is being performed by another execution")
            blocked = None
            for (index, action), effect_id, (token, entry) in zip(steps, ids, claims):
                if entry.get("state") in FINISHED:
                    continue
                refused, extra = None, {}
                if blocked:
                    state, detail = "skipped", f"not done: {blocked}"
                else:
                    try:
                        state, detail, *more = self._perform(effect_id, action, ticket)
                        extra = more[0] if more else {}
                    except (JiraError, MailError, NotifyError) as e:
                        state, detail, refused = "failed", str(e), e
                        blocked = f"{action.kind} failed"
                    except RecipientUnknown as e:
                        state, detail = "skipped", str(e)
                local = writes is not None and refused is None and (state == "skipped" or self._stays_local(action))
                self._finish(ticket, effect_id, rule, action, state, detail, held.pop(effect_id),
                             writes if local else None, **extra)
                if refused is not None and self.failures is not None:
                    self.failures.record(f"effect-{effect_prefix}-{rule}", RULE_FUNC, (effect_prefix, rule, ticket.key),
                                         ticket.key, f"{action.kind} failed: {refused}"[:500], 1)
        finally:
            if held:        # effects found finished, or left by a failure: their claims go back together
                pipe = writes if writes is not None else self.ledger.redis.pipeline(transaction=False)
                for effect_id, token in held.items():
                    self.ledger.release(effect_id, token, pipe=pipe)
                if writes is None:
                    pipe.execute()

    def _stays_local(self, action: Action) -> bool:
        """Whether performing ``action`` changes nothing outside relance: a JIRA action in dry run, mail to
        the outbox (each message a file named after its effect, so writing it again replaces it)."""
        if action.kind == "email":
            return isinstance(self.mailer, OutboxMailer)
        return action.kind != "notify" and self.jira.dry_run

    def _finish(self, ticket, effect_id, rule, action, state, detail, token, writes=None, **extra):
        """Record the effect's outcome, count it, note it on the timeline and give its claim back:
        one round trip, or on ``writes``."""
        pipe = writes if writes is not None else self.ledger.redis.pipeline(transaction=False)
        self.ledger.finish(effect_id, state, detail, pipe=pipe)
        if self.metrics is not None:
            self.metrics.count("effects", action.kind, state, pipe=pipe)
        self.audit.record(ticket.key, f"effect {state}", pipe=pipe, rule=rule, action=action.kind,
                          effect=effect_id, detail=detail, **extra)
        self.ledger.release(effect_id, token, pipe=pipe)
        if writes is None:
            pipe.execute()

    # -- one action each -------------------------------------------------
    def _perform(self, effect_id: str, action: Action, ticket: Ticket) -> tuple:
        return getattr(self, f"_do_{action.kind}")(effect_id, action.argument, ticket)

    def _do_transition(self, effect_id, target, ticket: Ticket):
        """``target``: a status name, or ``{to_state: open}``: any status of that lifecycle state."""
        if isinstance(target, TransitionAction):
            names = tuple(self.rules.statuses[target.to_state])
            there = self.rules.state_of(ticket.status) == target.to_state
            label = f"a status of {target.to_state} ({', '.join(names)})"
        else:
            names, label = (target,), target
            there = bool(ticket.status) and ticket.status.casefold() == target.casefold()
        if there:
            # An earlier attempt got no clear answer and JIRA (re-read since) shows it done.
            if self.ledger.get(effect_id).get("attempts"):
                return "done", f"moved to {ticket.status} (JIRA shows it after an unclear answer)"
            return "skipped", f"already {ticket.status}"
        self.ledger.begin(effect_id, {"transition": list(names)}, defer=self.jira.dry_run)
        if self.jira.dry_run:
            return "done", f"dry run: would move {ticket.key} to {label}"
        self.ledger.attempt(effect_id)
        name, reached = self.jira.transition_to(ticket.key, names)
        ticket.status = reached
        return "done", f"moved to {reached} by transition {name!r}"

    def _do_raise_priority(self, effect_id, steps: int, ticket: Ticket):
        names = [p["name"] for p in self.jira.priorities()]
        current = ticket.priority if ticket.priority in names else None
        # The target is computed once and kept in the ledger, so a retry sets the same priority.
        target = self.ledger.begin(effect_id, {
            "priority": names[max(0, names.index(current) - steps)] if current else None,
            "from": current}, defer=self.jira.dry_run)["priority"]
        if target is None:
            return "skipped", f"priority {ticket.priority!r} is not one of {names}"
        if target == current:
            return "skipped", f"already at the highest priority ({current})"
        ticket.priority = target
        if self.jira.dry_run:
            return "done", f"dry run: would set priority {target}"
        self.jira.set_priority(ticket.key, target)      # a PUT: repeating it is harmless
        return "done", f"priority {current} -> {target}"

    def _do_add_label(self, effect_id, label: str, ticket: Ticket):
        if label in ticket.labels:
            return "skipped", f"already labelled {label}"
        self.ledger.begin(effect_id, {"add_label": label}, defer=self.jira.dry_run)
        if self.jira.dry_run:
            return "done", f"dry run: would add label {label}"
        self.jira.add_label(ticket.key, label)
        ticket.labels = ticket.labels + (label,)
        return "done", f"label {label} added"

    def _do_set_priority(self, effect_id, name: str, ticket: Ticket):
        if (ticket.priority or "").casefold() == name.casefold():
            return "skipped", f"priority already {ticket.priority}"
        self.ledger.begin(effect_id, {"priority": name, "from": ticket.priority}, defer=self.jira.dry_run)
        if self.jira.dry_run:
            return "done", f"dry run: would set priority {name}"
        self.jira.set_priority(ticket.key, name)        # a PUT: repeating it is harmless
        previous, ticket.priority = ticket.priority, name
        return "done", f"priority {previous} -> {name}"

    def _do_remove_label(self, effect_id, label: str, ticket: Ticket):
        if label not in ticket.labels:
            return "skipped", f"no label {label}"
        self.ledger.begin(effect_id, {"remove_label": label}, defer=self.jira.dry_run)
        if self.jira.dry_run:
            return "done", f"dry run: would remove label {label}"
        self.jira.remove_label(ticket.key, label)
        ticket.labels = tuple(x for x in ticket.labels if x != label)
        return "done", f"label {label} removed"

    def _do_assign(self, effect_id, who: str, ticket: Ticket):
        """``who``: ``reporter``, ``unassigned``, or an account (an accountId on Cloud, a username on Data Center)."""
        if who == "unassigned":
            target = None
        elif who == "reporter":
            target = ticket.reporter
            if target is None:
                return "skipped", "the ticket has no reporter"
        else:
            target = Person(account_id=who, name=who)
        if target is None and ticket.assignee is None:
            return "skipped", "already unassigned"
        if target is not None and ticket.assignee is not None and target.same_as(ticket.assignee):
            return "skipped", f"already assigned to {target.ident}"
        self.ledger.begin(effect_id, {"assign": who}, defer=self.jira.dry_run)
        label = "nobody" if target is None else (f"the reporter ({target.ident})" if who == "reporter" else who)
        if self.jira.dry_run:
            return "done", f"dry run: would assign to {label}"
        if target is None:
            self.jira.assign(ticket.key)
        elif who == "reporter":
            self.jira.assign(ticket.key, account_id=target.account_id,
                             username=None if target.account_id else target.name)
        else:
            self.jira.assign(ticket.key, **({"account_id": who} if self.jira.cloud else {"username": who}))
        ticket.assignee = target
        return "done", f"assigned to {label}"

    def _do_notify(self, effect_id, spec, ticket: Ticket):
        url = self.notifier.url(spec.url_env) if self.notifier else None
        if not url:
            return "skipped", f"{spec.url_env} is not set: no chat message sent"
        locale, time_zone = self.rules.audience(ticket.project)
        text = self.renderer.render_text("chat", spec.template, locale, self.context(ticket), time_zone)
        self.ledger.begin(effect_id, {"notify": spec.url_env, "template": spec.template})
        status = self.notifier.post(url, text)
        return "done", f"{spec.template} posted to {spec.url_env} ({status})"

    def _do_comment(self, effect_id, comment, ticket: Ticket):
        if isinstance(comment, CommentAction):
            locale, time_zone = self.rules.audience(ticket.project)
            body = self.renderer.render_text("jira", comment.template, locale, self.context(ticket), time_zone)
        else:
            body = comment
        # A retry posts the same words.
        body = self.ledger.begin(effect_id, {"comment": body}, defer=self.jira.dry_run)["comment"]
        if self.jira.dry_run:
            return "done", "dry run: would comment"
        # A POST that got no clear answer may have been applied: look before posting again.
        if self.ledger.attempt(effect_id) > 0 and self.jira.has_comment(ticket.key, body):
            return "done", "commented (JIRA shows it after an unclear answer)"
        self.jira.add_comment(ticket.key, body)
        return "done", "commented"

    def _do_email(self, effect_id, spec, ticket: Ticket):
        """Send the email ``spec`` names. A customer email (its reader is the ticket's reporter) carries,
        with replies enabled, a signed Reply-To that brings the customer's answer back to the ticket;
        an email to support keeps MAIL_REPLY_TO. The intent records the audience and that Reply-To."""
        try:
            recipients, reader, role = self._recipients(spec.recipients, ticket)
        except RecipientUnknown:
            if not spec.fallback:
                raise
            recipients, reader, role = self._recipients(spec.fallback, ticket)
        recipients = [checked_address(a) for a in recipients]
        # The reader's own JIRA language and time zone, else the project's, else the rules file's.
        locale, time_zone = self.rules.audience(ticket.project)
        if reader:
            locale, time_zone = reader.locale or locale, reader.time_zone or time_zone
        rendered = self.renderer.render(spec.template, locale, self.context(ticket, reader), time_zone)
        audience = "customer" if role == "reporter" else "support"
        reply_to = None
        if audience == "customer" and self.replies is not None:
            reply_to = self.replies.address(ticket.key, checked_address(reader.email), time.time())
        intent = self.ledger.begin(effect_id, {"email": spec.template, "to": recipients, "locale": rendered.locale,
                                               "audience": audience, "reply_to": reply_to})
        if self.replies is not None:
            reply_to = intent.get("reply_to")       # a retry on another day sends the address first issued
        sent = self.mailer.send(Message(to=tuple(recipients), subject=rendered.subject, text=rendered.text,
                                        html=rendered.html, effect_id=effect_id, ticket=ticket.key,
                                        category=spec.template, reply_to=reply_to))
        self.ledger.keep_sent(effect_id, {"subject": rendered.subject, "to": recipients, "text": rendered.text,
                                          "html": rendered.html, "locale": rendered.locale,
                                          "template": spec.template, "sent_at": time.time(), "id": sent,
                                          "ticket": ticket.key, "audience": audience,
                                          "reply_to": reply_to or getattr(self.mailer, "reply_to", None),
                                          "reply_signed": bool(reply_to)})
        return "done", f"{spec.template} ({rendered.locale}) sent ({sent})", {"to": recipients}

    def _recipients(self, wanted, ticket: Ticket) -> tuple[list[str], Person | None, str | None]:
        """Addresses for ``wanted`` (roles or addresses), the first person among them (the reader),
        and the reader's role (``reporter`` or ``assignee``; None without a person)."""
        recipients, reader, role = [], None, None
        for who in wanted:
            if who in ("reporter", "assignee"):
                person = self._with_contact(getattr(ticket, who), who)
                recipients.append(person.email)
                if reader is None:
                    reader, role = person, who
            else:
                recipients.append(who)
        return recipients, reader, role

    def _with_contact(self, person: Person | None, role: str) -> Person:
        """``person`` with an email address, and their locale and time zone when JIRA tells them.

        Raises RecipientUnknown when the address cannot be seen (hidden on JIRA Cloud).
        """
        if person is None:
            raise RecipientUnknown(f"the ticket has no {role}")
        if person.email and person.locale and person.time_zone:
            return person
        user = None
        if person.account_id or person.name:
            try:
                user = self.jira.user(account_id=person.account_id, username=person.name)
            except JiraError as e:
                if not person.email:
                    raise RecipientUnknown(f"the {role} ({person.ident}): user lookup failed: {e}") from e
        user = user or {}
        email = person.email or user.get("emailAddress")
        if not email:
            raise RecipientUnknown(
                f"the {role} ({person.ident or 'no account id'}) has no visible email address "
                "(JIRA Cloud hides it unless the user's profile visibility allows it)")
        return replace(person, email=email, locale=person.locale or user.get("locale"),
                       time_zone=person.time_zone or user.get("timeZone"),
                       display_name=person.display_name or user.get("displayName"))

    def context(self, ticket: Ticket, reader: Person | None = None) -> dict:
        return email_context(self.rules, ticket, reader, self.jira_base_url)


def checked_address(address: str) -> str:
    """``address`` normalised, or RecipientInvalid (a permanent failure of that one email)."""
    try:
        return validate_email(address, check_deliverability=False, allow_smtputf8=True).normalized
    except EmailNotValidError as e:
        raise RecipientInvalid(f"cannot send to {address!r}: {e}") from None


def email_context(rules: RuleSet, ticket: Ticket, reader: Person | None = None, jira_base_url: str | None = None,
                  now: datetime | None = None) -> dict:
    """The variables every email template gets (see templates/emails/README.md)."""
    base = jira_base_url or ticket.site_url
    event = ticket.event
    reporter = ticket.reporter
    with_change = event.comment if event and event.comment and event.status_change else None
    question = with_change if with_change and not (reporter and reporter.same_as(with_change.author)) else None
    if question is None:
        question = next((c for c in reversed(ticket.comments)
                         if c.body and not (reporter and reporter.same_as(c.author))), None)
    customer = next((c for c in reversed(ticket.comments) if reporter and reporter.same_as(c.author)), None)
    if event and event.comment and reporter and reporter.same_as(event.comment.author):
        customer = event.comment
    now = now or datetime.now(timezone.utc)
    since = _moment(ticket.since_ms) if ticket.since_ms else now
    closes_after = rules.closes_after(rules.state_of(ticket.status) or "")
    return {
        "ticket": {"key": ticket.key, "summary": ticket.summary, "status": ticket.status,
                   "priority": ticket.priority, "project": ticket.project,
                   "url": f"{base}/browse/{ticket.key}" if base else f"#{ticket.key}"},
        "recipient_name": _name(reader),
        "reporter_name": _name(reporter),
        "question": {"author": _name(question.author) or "Support", "body": question.body} if question else None,
        "customer_words": customer.body if customer else None,
        "reopened_by": _name(event.actor) if event else "",
        "times_reopened": ticket.times_reopened,
        "since": since,
        "waiting_for": max(now - since, timedelta(0)),
        "closes_on": since + timedelta(seconds=closes_after) if closes_after else None,
        "comment_is_enough": rules.comment_is_enough(),
        "assignee_name": _name(ticket.assignee),
        "email_event": _email_event(ticket.email_event),
    }


def _email_event(facts: dict | None) -> dict | None:
    """An email event's facts as templates read them: ``sent_at`` a datetime (None if unknown)."""
    if not facts:
        return None
    sent_at = facts.get("sent_at")
    return {**facts, "sent_at": datetime.fromtimestamp(float(sent_at), timezone.utc) if sent_at else None}
