"""Performing effects: each planned action of a rule, once, through JIRA and the mailer.

Actions of one rule run in order. A permanent failure (JIRA or the mail
provider refusing for good) is recorded with its reason and stops the rule's
later actions; a transient one raises, so RQ retries the job and finished
effects are skipped the second time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from .audit import Audit
from .emails import Renderer
from .events import Comment, Person, TicketEvent
from .exceptions import JiraError, MailError, RecipientUnknown
from .ledger import FINISHED, EffectLedger
from .mail import Message
from .rules import Action, RuleSet

log = logging.getLogger("relance.actions")


@dataclass
class Ticket:
    """The ticket as known when acting: the event's view, refreshed from JIRA when it is reachable."""

    key: str
    summary: str = ""
    status: str | None = None
    priority: str | None = None
    labels: tuple[str, ...] = ()
    reporter: Person | None = None
    assignee: Person | None = None
    comments: tuple[Comment, ...] = ()
    site_url: str | None = None
    event: TicketEvent | None = None      # what triggered the rule, if an event did
    since_ms: int | None = None           # when the ticket entered the rule's state

    @classmethod
    def from_snapshot(cls, snap: dict, **extra) -> "Ticket":
        return cls(key=snap["key"], summary=snap.get("summary") or "", status=snap.get("status"),
                   priority=snap.get("priority"), labels=tuple(snap.get("labels") or ()),
                   reporter=Person.from_dict(snap.get("reporter")), assignee=Person.from_dict(snap.get("assignee")),
                   site_url=snap.get("site_url"), **extra)

    def refreshed(self, issue: dict | None) -> "Ticket":
        """This ticket updated with a JIRA issue body (GET /issue/{key})."""
        if not issue:
            return self
        from .events import _comment, _person   # same readers as for webhook bodies
        f = issue.get("fields") or {}
        comments = tuple(c for c in map(_comment, (f.get("comment") or {}).get("comments") or ()) if c)
        return replace(
            self, summary=f.get("summary") or self.summary,
            status=(f.get("status") or {}).get("name") or self.status,
            priority=(f.get("priority") or {}).get("name") or self.priority,
            labels=tuple(f["labels"]) if isinstance(f.get("labels"), list) else self.labels,
            reporter=_person(f.get("reporter")) or self.reporter,
            assignee=_person(f.get("assignee")) or self.assignee,
            comments=comments or self.comments,
        )


def _name(p: Person | None) -> str:
    return (p.display_name or p.name or p.email or "") if p else ""


def _date(ms: int | None) -> str:
    moment = datetime.fromtimestamp(ms / 1000, timezone.utc) if ms else datetime.now(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@dataclass
class Effects:
    rules: RuleSet
    jira: object
    mailer: object
    renderer: Renderer
    ledger: EffectLedger
    audit: Audit
    jira_base_url: str | None = None

    def perform_rule(self, rule: str, steps, ticket: Ticket, effect_prefix: str) -> None:
        """Perform ``steps`` ([(index, Action)]) of one rule for ``ticket``, each once."""
        blocked = None
        for index, action in steps:
            effect_id = f"{effect_prefix}:{rule}:{index}"
            if self.ledger.get(effect_id).get("state") in FINISHED:
                continue
            if blocked:
                self._finish(ticket, effect_id, rule, action, "skipped", f"not done: {blocked}")
                continue
            try:
                state, detail = self._perform(effect_id, action, ticket)
            except (JiraError, MailError) as e:
                self._finish(ticket, effect_id, rule, action, "failed", str(e))
                blocked = f"{action.kind} failed"
                continue
            except RecipientUnknown as e:
                state, detail = "skipped", str(e)
            self._finish(ticket, effect_id, rule, action, state, detail)

    def _finish(self, ticket, effect_id, rule, action, state, detail):
        self.ledger.finish(effect_id, state, detail)
        self.audit.record(ticket.key, f"effect {state}", rule=rule, action=action.kind, effect=effect_id,
                          detail=detail)

    # -- one action each -------------------------------------------------
    def _perform(self, effect_id: str, action: Action, ticket: Ticket) -> tuple[str, str]:
        return getattr(self, f"_do_{action.kind}")(effect_id, action.argument, ticket)

    def _do_transition(self, effect_id, status: str, ticket: Ticket):
        if ticket.status and ticket.status.casefold() == status.casefold():
            return "skipped", f"already {ticket.status}"
        self.ledger.begin(effect_id, {"transition": status})
        if self.jira.dry_run:
            return "done", f"dry run: would move {ticket.key} to {status}"
        name = self.jira.transition_to(ticket.key, status)
        ticket.status = status
        return "done", f"moved to {status} by transition {name!r}"

    def _do_raise_priority(self, effect_id, steps: int, ticket: Ticket):
        names = [p["name"] for p in self.jira.priorities()]
        current = ticket.priority if ticket.priority in names else None
        # The target is computed once and kept in the ledger, so a retry sets the same priority.
        target = self.ledger.begin(effect_id, {
            "priority": names[max(0, names.index(current) - steps)] if current else None,
            "from": current})["priority"]
        if target is None:
            return "skipped", f"priority {ticket.priority!r} is not one of {names}"
        if target == current:
            return "skipped", f"already at the highest priority ({current})"
        ticket.priority = target
        if self.jira.dry_run:
            return "done", f"dry run: would set priority {target}"
        self.jira.set_priority(ticket.key, target)
        return "done", f"priority {current} -> {target}"

    def _do_add_label(self, effect_id, label: str, ticket: Ticket):
        if label in ticket.labels:
            return "skipped", f"already labelled {label}"
        self.ledger.begin(effect_id, {"add_label": label})
        if self.jira.dry_run:
            return "done", f"dry run: would add label {label}"
        self.jira.add_label(ticket.key, label)
        ticket.labels = ticket.labels + (label,)
        return "done", f"label {label} added"

    def _do_comment(self, effect_id, body: str, ticket: Ticket):
        self.ledger.begin(effect_id, {"comment": body})
        if self.jira.dry_run:
            return "done", "dry run: would comment"
        self.jira.add_comment(ticket.key, body)
        return "done", "commented"

    def _do_email(self, effect_id, spec, ticket: Ticket):
        recipients, locale = [], None
        for who in spec.recipients:
            if who in ("reporter", "assignee"):
                address, person_locale = self._address_of(getattr(ticket, who), who)
                recipients.append(address)
                locale = locale or person_locale
            else:
                recipients.append(who)
        rendered = self.renderer.render(spec.template, locale or self.rules.locale, self._context(ticket, locale))
        self.ledger.begin(effect_id, {"email": spec.template, "to": recipients})
        sent = self.mailer.send(Message(to=tuple(recipients), subject=rendered.subject, text=rendered.text,
                                        html=rendered.html, effect_id=effect_id, ticket=ticket.key,
                                        category=spec.template))
        return "done", f"{spec.template} to {', '.join(recipients)} ({sent})"

    def _address_of(self, person: Person | None, role: str) -> tuple[str, str | None]:
        if person is None:
            raise RecipientUnknown(f"the ticket has no {role}")
        if person.email and person.locale:
            return person.email, person.locale
        user = None
        if person.account_id or person.name:
            try:
                user = self.jira.user(account_id=person.account_id, username=person.name)
            except JiraError as e:
                if not person.email:
                    raise RecipientUnknown(f"{role} {_name(person) or person.ident}: user lookup failed: {e}") from e
        email = person.email or (user or {}).get("emailAddress")
        if not email:
            raise RecipientUnknown(
                f"{role} {_name(person) or person.ident} has no visible email address "
                "(JIRA Cloud hides it unless the user's profile visibility allows it)")
        return email, person.locale or (user or {}).get("locale")

    def _context(self, ticket: Ticket, locale: str | None) -> dict:
        base = self.jira_base_url or ticket.site_url
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
        return {
            "locale": (locale or self.rules.locale).split("_")[0],
            "ticket": {"key": ticket.key, "summary": ticket.summary, "status": ticket.status,
                       "priority": ticket.priority,
                       "url": f"{base}/browse/{ticket.key}" if base else f"#{ticket.key}"},
            "reporter_name": _name(reporter),
            "question": {"author": _name(question.author) or "Support", "body": question.body} if question else None,
            "customer_words": customer.body if customer else None,
            "reopened_by": _name(event.actor) if event else "",
            "resolved_on": _date(ticket.since_ms),
        }
