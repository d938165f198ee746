"""Sample tickets for previews and for `check`: every template rendered with realistic data."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from .actions import Ticket, email_context
from .emails import Renderer, RenderedEmail
from .events import Comment, Person, TicketEvent
from .rules import RuleSet

REPORTER = Person(account_id="5b10a2844c20165700ede21g", display_name="Jeanne Martin",
                  email="jeanne.martin@client.example", locale="fr_FR", time_zone="Europe/Paris")
SUPPORT = Person(account_id="5b10ac8d82e05b22cc7d4ef5", display_name="Sam Support")

QUESTION = """Thanks for the details. To reproduce it we need two things:
# the *exact* SDK version (see {{sdk --version}})
# the stack trace printed when the login fails

{code:python}
client = Client(api_key=KEY)
client.login()   # fails here?
{code}"""

CUSTOMER_WORDS = """Still broken after the 2.3.1 update. Same error, see [the logs|https://files.client.example/logs.txt].
<b>This is urgent</b> for our release on Monday."""


def sample_ticket(now: datetime | None = None, since: timedelta = timedelta(days=3)) -> Ticket:
    now = now or datetime.now(timezone.utc)
    comments = (Comment("10001", "It fails on the login page with error 500.", REPORTER),
                Comment("10002", QUESTION, SUPPORT), Comment("10003", CUSTOMER_WORDS, REPORTER))
    event = TicketEvent(webhook_event="jira:issue_updated", issue_key="SUP-42", issue_id="10042",
                        timestamp_ms=int(now.timestamp() * 1000), actor=REPORTER)
    return Ticket(key="SUP-42", summary="Login fails after upgrading to SDK 2.3 <script>alert(1)</script>",
                  status="Resolved", priority="High", reporter=REPORTER, comments=comments,
                  site_url="https://acme.atlassian.net", project="SUP", event=event,
                  since_ms=int((now - since).timestamp() * 1000), times_reopened=2)


def render_samples(rules: RuleSet, renderer: Renderer, names, locales, jira_base_url: str | None = None):
    """Yield (name, locale, RenderedEmail) for every pair. Rendering raises on an unknown variable."""
    ticket = sample_ticket()
    context = email_context(rules, ticket, REPORTER, jira_base_url)
    for name in names:
        for locale in locales:
            yield name, locale, renderer.render(name, locale, context, REPORTER.time_zone)


__all__ = ["render_samples", "sample_ticket", "RenderedEmail"]
