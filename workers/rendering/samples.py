"""Sample tickets for previews and for `check`: every template rendered with realistic data."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..actions import Ticket, email_context
from .emails import Renderer, RenderedEmail
from ..core.events import Comment, Person, TicketEvent
from ..core.rules import RuleSet

REPORTER = Person(account_id="5b10a2844c20165700ede21g", display_name="Jeanne Martin",
                  email="jeanne.martin@client.example", locale="fr_FR", time_zone="Europe/Paris")
SUPPORT = Person(account_id="5b10ac8d82e05b22cc7d4ef5", display_name="Sam Support")   # also the assignee

QUESTION = """Thanks for the details. To reproduce it we need two things:
# the *exact* SDK version (see {{sdk --version}})
# the stack trace printed when the login fails

{code:python}
client = Client(api_key=KEY)
client.login()   # fails here?
{code}"""

CUSTOMER_WORDS = """Still broken after the 2.3.1 update. Same error, see [the logs|https://files.client.example/logs.txt].
<b>This is urgent</b> for our release on Monday."""


# The JIRA status a template is written for (the sample ticket is Resolved for the others).
STATUS = {"ticket_received": "Open", "feedback_request": "Waiting for feedback",
          "feedback_reminder": "Waiting for feedback", "escalation": "Reopened", "support_silence": "Reopened",
          "escalation_note": "Reopened", "escalation_chat": "Reopened", "email_bounced": "Waiting for feedback"}


def sample_email_event(now: datetime | None = None) -> dict:
    """What SendGrid said of the sample feedback request: it bounced (``email_event`` in templates of rules
    on ``when: {email: bounced}``)."""
    now = now or datetime.now(timezone.utc)
    return {"kind": "bounced", "to": REPORTER.email, "status": "5.1.1", "cause": "mailbox_unavailable",
            "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
            "template": "feedback_request", "subject": "[SUP-42] We need your feedback",
            "sent_at": (now - timedelta(minutes=2)).timestamp(), "effect": "d1:feedback-request:0"}


def sample_ticket(now: datetime | None = None, since: timedelta = timedelta(days=3), status: str = "Resolved",
                  assignee: Person | None = SUPPORT) -> Ticket:
    """SUP-42, in ``status`` for ``since``; ``assignee=None`` for an unassigned ticket."""
    now = now or datetime.now(timezone.utc)
    comments = (Comment("10001", "It fails on the login page with error 500.", REPORTER),
                Comment("10002", QUESTION, SUPPORT), Comment("10003", CUSTOMER_WORDS, REPORTER))
    event = TicketEvent(webhook_event="jira:issue_updated", issue_key="SUP-42", issue_id="10042",
                        timestamp_ms=int(now.timestamp() * 1000), actor=REPORTER)
    return Ticket(key="SUP-42", summary="Login fails after upgrading to SDK 2.3 <script>alert(1)</script>",
                  status=status, priority="High", reporter=REPORTER, assignee=assignee, comments=comments,
                  site_url="https://acme.atlassian.net", project="SUP", event=event,
                  since_ms=int((now - since).timestamp() * 1000), times_reopened=2)


def _reply_sample() -> dict:
    """What templates/jira/*/email_reply.txt gets (workers/replies.py): a customer's reply by email."""
    return {"author_name": "Claire Client", "sender": "claire@client.example", "subject": "Re: SUP-42",
            "received": datetime.now(timezone.utc), "attachment_links": ["[^screenshot.png]"], "whole_reply": None,
            "reply": "Still failing after the upgrade, see the screenshot."}


# Templates that get more than the email context: their own variables, by template name.
EXTRA_CONTEXT = {"email_reply": _reply_sample}


def sample_context(rules: RuleSet, name: str, reader: Person | None = REPORTER,
                   jira_base_url: str | None = None) -> dict:
    """The variables template ``name`` gets for the sample ticket, in the status it is written for; with
    ``email_event`` set when a rule on ``when: {email: bounced}`` uses the template (as when it runs)."""
    ticket = sample_ticket(status=STATUS.get(name, "Resolved"))
    on_email = {a.template[1] for r in rules.rules if r.when.kind == "email" for a in r.do if a.template}
    if name in on_email | {"email_bounced"}:
        ticket.email_event = sample_email_event()
    context = email_context(rules, ticket, reader, jira_base_url)
    extra = EXTRA_CONTEXT.get(name)
    return {**context, **extra()} if extra else context


def render_samples(rules: RuleSet, renderer: Renderer, names, locales, jira_base_url: str | None = None):
    """Yield (name, locale, RenderedEmail) for every pair. Rendering raises on an unknown variable."""
    for name in names:
        context = sample_context(rules, name, REPORTER, jira_base_url)
        for locale in locales:
            yield name, locale, renderer.render(name, locale, context, REPORTER.time_zone)


def text_templates(templates_dir: Path, folder: str) -> list[tuple[str, str]]:
    """(locale, name) of every ``<folder>/<locale>/<name>.txt``: JIRA comments (jira/), chat messages (chat/)."""
    return sorted((path.parent.name, path.stem) for path in (Path(templates_dir) / folder).glob("*/*.txt"))


def render_text_samples(rules: RuleSet, renderer: Renderer, folder: str, pairs, jira_base_url: str | None = None):
    """Yield (locale, name, text) for each (locale, name), as a rule's comment or notify action renders it
    (no reader: the project's or the file's locale and time zone). Raises on an unknown variable."""
    time_zone = rules.audience(sample_ticket().project)[1]
    for locale, name in pairs:
        context = sample_context(rules, name, None, jira_base_url)
        yield locale, name, renderer.render_text(folder, name, locale, context, time_zone)


__all__ = ["render_samples", "render_text_samples", "sample_context", "sample_ticket", "text_templates",
           "RenderedEmail"]
