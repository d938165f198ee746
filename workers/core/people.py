"""Who did something: the customer, support, or automation. Pure: no I/O.

The customer is the ticket's reporter, a JIRA Service Management customer
(``accountType: customer``), a member of one of the rules file's ``customers:``
JIRA groups, or anyone whose email address is at one of its ``customers:`` domains. Automation is an app account
(``accountType: app``: Automation for Jira, other apps) or relance's own JIRA
account (its comments come back as webhooks). Everyone else is support.
"""

from __future__ import annotations

from .events import Person

CUSTOMER, SUPPORT, AUTOMATION = "customer", "support", "automation"


def role_of(person: Person | None, reporter: Person | None, customer_domains=(),
            automation=frozenset(), customer_accounts=frozenset()) -> str | None:
    """The role of ``person`` on a ticket reported by ``reporter``; None if nobody is known.

    ``customer_accounts``: the members of the rules file's customer groups (asked of JIRA).
    """
    if person is None:
        return None
    if person.account_type == "app" or (person.ident and person.ident in automation):
        return AUTOMATION
    if reporter is not None and person.same_as(reporter):
        return CUSTOMER
    if person.account_type == "customer" or (person.ident and person.ident in customer_accounts) \
            or (person.name and person.name in customer_accounts):
        return CUSTOMER
    domain = "@" + person.email.rpartition("@")[2].lower() if person.email and "@" in person.email else None
    if domain and domain in customer_domains:
        return CUSTOMER
    return SUPPORT


def fits(role: str | None, who: str, comment: bool = False) -> bool:
    """Whether an event by ``role`` fits a trigger's ``who`` (customer, support, anyone).

    ``anyone`` takes every state change, automation's too (a workflow's
    auto-transition still resolves a ticket), but not automation's comments: a
    bot's comment is nobody's answer.
    """
    if who == "anyone":
        return not (comment and role == AUTOMATION)
    return role == who
