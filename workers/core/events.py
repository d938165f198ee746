"""JIRA webhook bodies -> TicketEvent. Pure: no I/O.

Handles Cloud and Server/Data Center shapes: users with only ``accountId``
(modern Cloud) or ``name``/``key``/``emailAddress`` (Server), status items whose
``field`` is ``"Status"``, comment-only updates without ``changelog``, and
``comment_created`` bodies that carry no ``issue`` at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from ..exceptions import PayloadError

ISSUE_EVENTS = ("jira:issue_created", "jira:issue_updated", "jira:issue_deleted")
COMMENT_EVENTS = ("comment_created", "comment_updated", "comment_deleted")
HANDLED_EVENTS = ISSUE_EVENTS + COMMENT_EVENTS


@dataclass(frozen=True)
class Person:
    account_id: str | None = None
    name: str | None = None          # Server/Data Center username
    display_name: str | None = None
    email: str | None = None
    time_zone: str | None = None
    locale: str | None = None
    account_type: str | None = None

    @property
    def ident(self) -> str | None:
        return self.account_id or self.name

    def same_as(self, other: "Person | None") -> bool:
        if other is None:
            return False
        return any(a and a == b for a, b in ((self.account_id, other.account_id), (self.name, other.name),
                                             (self.email, other.email)))

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict | None) -> "Person | None":
        return cls(**data) if data else None


@dataclass(frozen=True)
class Comment:
    id: str | None
    body: str
    author: Person | None
    created: str | None = None
    # A reply by email that relance posted for the customer: JIRA shows it by relance's own account,
    # but the signed reply address proves whose words they are (workers/replies.py).
    via_email: bool = False


@dataclass(frozen=True)
class TicketEvent:
    """What one delivery says about one ticket."""

    webhook_event: str
    issue_key: str | None
    issue_id: str | None
    timestamp_ms: int | None
    event_type: str | None = None               # issue_event_type_name, when sent
    status: str | None = None                   # the ticket's status as the payload shows it
    status_change: tuple[str | None, str | None] | None = None   # (fromString, toString)
    summary: str | None = None
    priority: str | None = None
    labels: tuple[str, ...] = ()
    project: str | None = None
    issue_type: str | None = None
    reporter: Person | None = None
    assignee: Person | None = None
    actor: Person | None = None
    comment: Comment | None = None              # the comment made with this event
    comments: tuple[Comment, ...] = ()          # the ticket's comments, when the payload has them
    site_url: str | None = None                 # JIRA base URL derived from ``self`` links

    @property
    def is_creation(self) -> bool:
        return self.webhook_event == "jira:issue_created"

    @property
    def adds_comment(self) -> bool:
        """True if the event brings a comment made with it (not an edit or a deletion of one)."""
        return (self.comment is not None and self.webhook_event not in ("comment_updated", "comment_deleted")
                and self.event_type not in ("issue_comment_edited", "issue_comment_deleted"))

    def snapshot(self) -> dict:
        """The ticket as this event shows it, JSON-ready (kept for dry runs and emails)."""
        return {
            "key": self.issue_key, "id": self.issue_id, "status": self.status, "summary": self.summary,
            "priority": self.priority, "labels": list(self.labels), "project": self.project,
            "issue_type": self.issue_type,
            "reporter": self.reporter.to_dict() if self.reporter else None,
            "assignee": self.assignee.to_dict() if self.assignee else None,
            "site_url": self.site_url,
        }


def _person(data) -> Person | None:
    if not isinstance(data, dict):
        return None
    p = Person(
        account_id=_str(data.get("accountId")),
        name=_str(data.get("name")) or _str(data.get("key")),
        display_name=_str(data.get("displayName")),
        email=_str(data.get("emailAddress")),
        time_zone=_str(data.get("timeZone")),
        locale=_str(data.get("locale")),
        account_type=_str(data.get("accountType")),
    )
    return p if (p.account_id or p.name or p.email or p.display_name) else None


def _str(value) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    value = str(value)
    return value or None


def _comment(data) -> Comment | None:
    if not isinstance(data, dict):
        return None
    body = data.get("body")
    if not isinstance(body, str):   # ADF (API v3) bodies are not sent by webhooks; ignore if met
        body = ""
    return Comment(id=_str(data.get("id")), body=body,
                   author=_person(data.get("author") or data.get("updateAuthor")),
                   created=_str(data.get("created")))


_SELF_BASE = re.compile(r"^(https?://.+?)/rest/api/")
# What JIRA issue keys and ids look like. Both go into REST URLs: anything else is refused here.
# (fullmatch: a trailing newline does not pass as it would with ``$``).
ISSUE_KEY = re.compile(r"[A-Z][A-Z0-9_]{0,63}-[0-9]{1,18}")
ISSUE_ID = re.compile(r"[0-9]{1,18}")
_COMMENT_ISSUE_ID = re.compile(r"/issue/(\d+)/comment/")


def _status_change(changelog) -> tuple[str | None, str | None] | None:
    if not isinstance(changelog, dict) or not isinstance(changelog.get("items"), list):
        return None
    for item in changelog["items"]:
        if not isinstance(item, dict):
            continue
        if (_str(item.get("fieldId")) or _str(item.get("field")) or "").lower() == "status":
            return (_str(item.get("fromString")), _str(item.get("toString")))
    return None


def _timestamp(body, fields) -> int | None:
    ts = body.get("timestamp")
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts > 0:
        return int(ts)
    return jira_time_ms(fields.get("updated"))


def jira_time_ms(value) -> int | None:
    """A JIRA date-time (``2024-01-31T09:15:00.000+0000``) in epoch milliseconds, or None."""
    if isinstance(value, str):
        for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
            try:
                return int(datetime.strptime(value, fmt).timestamp() * 1000)
            except ValueError:
                continue
    return None


def identity_problem(body: dict) -> str | None:
    """Why the ticket a webhook body names cannot be a JIRA ticket (a key or id that could
    become a path), or None. The web edge answers such a body 200 ignored; parse_event refuses it."""
    issue = body.get("issue") if isinstance(body.get("issue"), dict) else {}
    key, issue_id = _str(issue.get("key")), _str(issue.get("id"))
    if key is not None and not ISSUE_KEY.fullmatch(key.upper()):
        return f"{key[:40]!r} is not a JIRA issue key (PROJECT-123)"
    if issue_id is not None and not ISSUE_ID.fullmatch(issue_id):
        return f"{issue_id[:40]!r} is not a JIRA issue id (digits)"
    return None


def parse_event(body) -> TicketEvent:
    """Read a decoded webhook body. Raises PayloadError if it is no JIRA event."""
    if not isinstance(body, dict):
        raise PayloadError("the body must be a JSON object")
    issue = body.get("issue") if isinstance(body.get("issue"), dict) else {}
    webhook_event = body.get("webhookEvent")
    if (webhook_event is None and issue.get("key") and isinstance(body.get("changelog"), dict)):
        webhook_event = "jira:issue_updated"    # relayed bodies that lost their envelope
    if not isinstance(webhook_event, str) or not webhook_event:
        raise PayloadError("no 'webhookEvent' in the body: not a JIRA webhook")
    fields = issue.get("fields") if isinstance(issue.get("fields"), dict) else {}
    comment = _comment(body.get("comment"))

    issue_id = _str(issue.get("id"))
    self_link = _str(issue.get("self")) or _str((body.get("comment") or {}).get("self")
                                                if isinstance(body.get("comment"), dict) else None)
    if not issue_id and self_link:
        m = _COMMENT_ISSUE_ID.search(self_link)
        issue_id = m.group(1) if m else None
    site = _SELF_BASE.match(self_link or "")

    comments = ()
    if isinstance(fields.get("comment"), dict) and isinstance(fields["comment"].get("comments"), list):
        comments = tuple(c for c in map(_comment, fields["comment"]["comments"]) if c)
    status = fields.get("status") if isinstance(fields.get("status"), dict) else {}
    priority = fields.get("priority") if isinstance(fields.get("priority"), dict) else {}
    project = fields.get("project") if isinstance(fields.get("project"), dict) else {}
    issue_type = fields.get("issuetype") if isinstance(fields.get("issuetype"), dict) else {}
    labels = fields.get("labels") if isinstance(fields.get("labels"), list) else []
    problem = identity_problem({"issue": {"key": issue.get("key"), "id": issue_id}})
    if problem:
        raise PayloadError(problem)
    key = _str(issue.get("key"))
    key = key.upper() if key else None
    return TicketEvent(
        webhook_event=webhook_event,
        issue_key=key,
        issue_id=issue_id,
        timestamp_ms=_timestamp(body, fields),
        event_type=_str(body.get("issue_event_type_name")),
        status=_str(status.get("name")),
        status_change=_status_change(body.get("changelog")),
        summary=_str(fields.get("summary")),
        priority=_str(priority.get("name")),
        labels=tuple(str(x) for x in labels),
        project=_str(project.get("key")),
        issue_type=_str(issue_type.get("name")),
        reporter=_person(fields.get("reporter")),
        assignee=_person(fields.get("assignee")),
        actor=_person(body.get("user")) or (comment.author if comment else None),
        comment=comment,
        comments=comments,
        site_url=site.group(1) if site else None,
    )
