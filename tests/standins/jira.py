"""A local HTTP stand-in for the JIRA REST API v2, for tests.

It serves the few endpoints relance uses, answers with JIRA's shapes, status codes and
error bodies, validates request bodies against the published JIRA OpenAPI schemas
(tests/contracts/jira-v2-subset.json), and lets a test play the human side (create
issues and users, move an issue, comment) and inject failures (429, 5xx).

Behaviours copied from JIRA Cloud (see tests/contracts/README.md for sources):

- 401 with a text/plain "Client must be authenticated to access this resource." body
  (JIRA Cloud), or, when constructed with a `pat` (Data Center style), JSON
  {"errorMessages": ["You are not authenticated. ..."], "errors": {}}.
- 404 {"errorMessages": ["Issue does not exist or you do not have permission to see it."]}.
- 400 {"errorMessages": ["Transition id 'X' is not valid for this issue."]} for a
  transition not available from the issue's current status.
- Field errors as {"errorMessages": [], "errors": {"<field>": "<message>"}}.
- 415 for a POST/PUT that is not Content-Type: application/json.
- 429 with Retry-After (seconds), X-RateLimit-* and RateLimit-Reason headers.
- User email addresses omitted from every user object when the user hides them.
- Entering a "done" status sets the resolution to "Done" unless the transition sets
  one; leaving it clears the resolution (as JIRA's default post-functions do).
- GET /rest/api/2/status lists the workflow's statuses (id, name, statusCategory), as
  JIRA's getStatuses does (checked against its published schema, StatusDetails);
  GET /rest/api/2/project/{key}/statuses those of a project, per issue type
  (getAllStatuses), 404 "No project could be found with key 'X'." for an unknown one.

Attachments, POST /rest/api/2/issue/{key}/attachments (addAttachment in the contract; the
OpenAPI description: multipart/form-data, the part named `file`, and the `X-Atlassian-Token:
no-check` header "if not it is blocked"):

- 403 with a text/plain "XSRF check failed" body for any multipart or form POST without
  `X-Atlassian-Token: no-check` (or the deprecated `nocheck`), as JIRA's XsrfResourceFilter
  answers (wording as quoted in the issue trackers of jira.js, jira-connector, pycontribs/jira).
- 415 for a POST to it that is not multipart/form-data; 400 when no part is named `file`
  (wording modelled); 404 for an unknown issue; 413 when a file exceeds
  `max_attachment_size` (the spec's 413; JIRA Data Center's default limit is 10 MB).
- 200 with the list of attachments created (Attachment: self, id, filename, author = the API
  account, created, size, mimeType, content); `GET issue` shows them in `fields.attachment`,
  and GET /rest/api/2/attachment/content/{id} serves the bytes (Cloud's content URL).

Admin webhooks, /rest/webhooks/1.0/webhook (not in the OpenAPI specs we have; Cloud's
/rest/api/3/webhook is a different API, for Connect and OAuth 2.0 apps only). Shapes
modelled on Atlassian's "Webhooks" pages for Cloud and Data Center
(developer.atlassian.com/cloud/jira/platform/webhooks, .../server/jira/platform/webhooks:
"Registering a webhook via the Jira REST API"), on "Managing webhooks" for Data Center
(confluence.atlassian.com/adminjiraserver/managing-webhooks-938846912.html: the secret
signs deliveries with X-Hub-Signature), and on what public clients send and read:

- POST .../webhook with {"name", "url", "events": [...], "filters":
  {"issue-related-events-section": "<JQL>"}, "excludeBody": false, "secret"?}: 201 with
  the webhook as GET shows it; PUT .../webhook/{id} with the same body replaces it (200);
  GET .../webhook is a JSON array (no paging) of {"self": ".../rest/webhooks/1.0/webhook/
  {id}", "name", "url", "events", "filters", "excludeBody", "enabled", "lastUpdated"
  (epoch ms), "lastUpdatedUser", "lastUpdatedDisplayName"}. The id is the last segment of
  `self`. The secret is stored but never shown again (as in JIRA's form).
- Only JIRA administrators may use them: with `admin=False` the account is answered 403
  {"errorMessages": ["You are not authorized to perform this action. Administrator
  privileges are required."], "errors": {}} (wording modelled, not quoted). A body
  without name or url, or events that are not a list of strings, is answered 400.
"""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
import json
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from flask import Flask, Response, jsonify, request
from jsonschema import Draft4Validator

from ._server import RateLimit, Recorder, RecordedRequest, StandInServer, describe_request, record_exchange

CONTRACT_PATH = Path(__file__).resolve().parents[1] / "contracts" / "jira-v2-subset.json"
CONTRACT: dict[str, Any] = json.loads(CONTRACT_PATH.read_text())


def contract_validator(schema: Mapping[str, Any]) -> Draft4Validator:
    """A validator for `schema`, whose $refs point into the JIRA contract's components."""
    return Draft4Validator({**schema, "components": CONTRACT["components"]})


STATUS_CATEGORIES = {
    "new": {"id": 2, "key": "new", "colorName": "blue-gray", "name": "To Do"},
    "indeterminate": {"id": 4, "key": "indeterminate", "colorName": "yellow", "name": "In Progress"},
    "done": {"id": 3, "key": "done", "colorName": "green", "name": "Done"},
}

# {from status: {transition name: to status}} of a support project's workflow.
DEFAULT_WORKFLOW: dict[str, dict[str, str]] = {
    "Open": {
        "Start progress": "In Progress",
        "Ask for feedback": "Waiting for feedback",
        "Resolve": "Resolved",
        "Close": "Closed",
    },
    "In Progress": {
        "Stop progress": "Open",
        "Ask for feedback": "Waiting for feedback",
        "Resolve": "Resolved",
        "Close": "Closed",
    },
    "Waiting for feedback": {
        "Give feedback": "Open",
        "Resolve": "Resolved",
        "Close": "Closed",
    },
    "Resolved": {"Close": "Closed", "Reopen": "Reopened"},
    "Reopened": {
        "Start progress": "In Progress",
        "Ask for feedback": "Waiting for feedback",
        "Resolve": "Resolved",
        "Close": "Closed",
    },
    "Closed": {"Reopen": "Reopened"},
}
DEFAULT_STATUS_CATEGORIES = {
    "Open": "new",
    "Reopened": "new",
    "In Progress": "indeterminate",
    "Waiting for feedback": "indeterminate",
    "Resolved": "done",
    "Closed": "done",
}
_CLASSIC_STATUS_IDS = {"Open": "1", "In Progress": "3", "Reopened": "4", "Resolved": "5", "Closed": "6"}

# (id, name, colour), highest first, as a Cloud site's default priority scheme.
PRIORITIES = [
    ("1", "Highest", "#d04437"),
    ("2", "High", "#f15c75"),
    ("3", "Medium", "#f79232"),
    ("4", "Low", "#707070"),
    ("5", "Lowest", "#999999"),
]
RESOLUTIONS = [("10000", "Done"), ("10001", "Won't Do"), ("10002", "Duplicate"), ("10003", "Cannot Reproduce")]

ISSUE_NOT_FOUND = "Issue does not exist or you do not have permission to see it."
USER_NOT_FOUND = "Specified user does not exist or you do not have required permissions"
NOT_ON_SCREEN = "Field '{}' cannot be set. It is not on the appropriate screen, or unknown."
CLOUD_UNAUTHENTICATED = "Client must be authenticated to access this resource."
DC_UNAUTHENTICATED = "You are not authenticated. Authentication required to perform this operation."

NOT_ADMIN = "You are not authorized to perform this action. Administrator privileges are required."
WEBHOOKS = "/rest/webhooks/1.0/webhook"
WEBHOOK_JQL = "issue-related-events-section"     # the filters key of the JQL an admin webhook is sent for

# Content types a browser form can send across sites: JIRA's XSRF check refuses them without the token header.
XSRF_CHECKED = frozenset({"multipart/form-data", "application/x-www-form-urlencoded", "text/plain"})

EDIT_SCREEN = frozenset({"summary", "priority", "labels", "comment", "assignee"})
TRANSITION_SCREEN = frozenset({"resolution", "comment"})
# The JQL reconcile sends: status in ("A", "B") AND updated >= "-90m" [ORDER BY ...]
_JQL = re.compile(r'status\s+in\s*\((?P<statuses>[^)]*)\)\s+AND\s+updated\s*>=\s*"?-(?P<amount>\d+)(?P<unit>[mhdw])"?'
                  r'(?:\s+ORDER\s+BY\s+[\w\s,]+)?', re.IGNORECASE)


def jira_time(moment: datetime) -> str:
    """Format a datetime as JIRA does: 2024-01-31T09:15:00.000+0000 (UTC)."""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _now() -> datetime:
    return datetime.now(timezone.utc)



MAX_COMMENT_CHARS = 32_767        # JIRA's default limit on a text field (a comment's body)

class JiraError(Exception):
    """An error JIRA would answer: `status` with {"errorMessages": [...], "errors": {...}}."""

    def __init__(self, status: int, messages: Iterable[str] = (), errors: Mapping[str, str] | None = None):
        super().__init__(status, list(messages), dict(errors or {}))
        self.status = status
        self.messages = list(messages)
        self.errors = dict(errors or {})


class _FieldError(ValueError):
    """A value JIRA rejects for one field (becomes errors[<field>])."""


class Workflow:
    """Statuses, their categories and the named transitions between them.

    `transitions` maps each status to {transition name: target status}. Transition
    names must differ from status names, so clients have to pick a transition by its
    `to.name`, as with real workflows. Each distinct (name, target) pair gets one id
    ("11", "21", ...); `categories` maps statuses to "new", "indeterminate" or
    "done" (unlisted statuses are "indeterminate").
    """

    def __init__(self, transitions: Mapping[str, Mapping[str, str]], categories: Mapping[str, str] | None = None):
        self.transitions = {src: dict(names) for src, names in transitions.items()}
        statuses: list[str] = []
        for src, names in self.transitions.items():
            for status in (src, *names.values()):
                if status not in statuses:
                    statuses.append(status)
        self.categories = {status: (categories or {}).get(status, "indeterminate") for status in statuses}
        for status, category in self.categories.items():
            if category not in STATUS_CATEGORIES:
                raise ValueError(f"status {status!r}: unknown category {category!r}")
        self.status_ids: dict[str, str] = {}
        for index, status in enumerate(statuses):
            self.status_ids[status] = _CLASSIC_STATUS_IDS.get(status, str(10000 + index))
        self.transition_ids: dict[tuple[str, str], str] = {}
        for names in self.transitions.values():
            for name, target in names.items():
                if name in self.categories:
                    raise ValueError(f"transition name {name!r} is also a status name")
                self.transition_ids.setdefault((name, target), str(11 + 10 * len(self.transition_ids)))

    @property
    def statuses(self) -> list[str]:
        """Every status, in order of first appearance."""
        return list(self.categories)

    def available(self, status: str) -> list[tuple[str, str, str]]:
        """(id, name, target status) of each transition available from `status`."""
        return [(self.transition_ids[(name, to)], name, to) for name, to in self.transitions.get(status, {}).items()]


@dataclass
class _Failure:
    remaining: int
    status: int
    retry_after: int | None
    path_contains: str | None
    after_serving: bool = False
    method: str | None = None


class JiraStandIn(StandInServer):
    """A JIRA REST API v2 server on 127.0.0.1 for tests (start() returns its base URL).

    Authentication: HTTP Basic with `email`:`api_token` (JIRA Cloud API token), or, when
    `pat` is set, also "Authorization: Bearer <pat>" (Data Center personal access token).
    The authenticated account is a user of its own ("relance-bot" / "relance") that
    authors the comments posted through the API.

    Serves, under /rest/api/2: GET/PUT issue/{key}, GET/POST issue/{key}/transitions,
    GET/POST issue/{key}/comment, POST issue/{key}/attachments, GET attachment/content/{id}, GET priority, GET user, GET myself, GET group/member, GET status,
    GET project/{key}/statuses;
    and the admin webhooks API, /rest/webhooks/1.0/webhook (GET, POST; GET, PUT, DELETE /{id}),
    open to the account only while `admin` is true; and
    the JQL search as `search_api` says: "cloud" (the default without a `pat`) serves POST
    /rest/api/3/search/jql (nextPageToken paging) and answers 410 Gone to /rest/api/2/search,
    as Cloud does since 2025; "datacenter" (the default with a `pat`) serves POST
    /rest/api/2/search (startAt paging) and answers 404 to /rest/api/3/search/jql. The JQL
    understood is what reconcile sends: `status in ("A", "B") AND updated >= "-90m"`
    (relative m, h, d or w), optionally followed by `ORDER BY ...` (results come by key).

    `workflow` ({status: {transition name: target status}}) replaces the default support
    workflow (DEFAULT_WORKFLOW); `status_categories` ({status: "new"|"indeterminate"|
    "done"}) overrides DEFAULT_STATUS_CATEGORIES; other statuses are "indeterminate".

    Like a JIRA Cloud site far away: `latency_ms` delays every answer; `rate` (requests per
    second, bursts of `burst`) limits each endpoint and HTTP method as JIRA Cloud's burst
    limits for API-token traffic do (a token bucket per tenant, endpoint and method; the
    numbers are not published): over it, 429 with Retry-After (whole seconds),
    X-RateLimit-Reset and RateLimit-Reason: jira-burst-based. `record=False` keeps counts
    only, not every request (a benchmark's thousands).
    """

    def __init__(
        self,
        email: str = "relance@example.com",
        api_token: str = "jira-token",
        pat: str | None = None,
        workflow: Mapping[str, Mapping[str, str]] | None = None,
        status_categories: Mapping[str, str] | None = None,
        admin: bool = True,
        search_api: str | None = None,
        max_attachment_size: int = 10 * 1024 * 1024,
        latency_ms: float = 0,
        rate: float | None = None,
        burst: int | None = None,
        record: bool = True,
        port: int = 0,
        expose_stats: bool = False,
    ):
        if search_api not in (None, "cloud", "datacenter"):
            raise ValueError("search_api is 'cloud' (/rest/api/3/search/jql) or 'datacenter' (/rest/api/2/search)")
        self.search_api = search_api or ("datacenter" if pat else "cloud")
        self.email = email
        self.admin = admin
        self.max_attachment_size = max_attachment_size
        self._webhooks: dict[str, dict[str, Any]] = {}
        self._webhook_ids = itertools.count(1)
        self._projects: dict[str, list[str] | None] = {}
        self.webhook_secrets: dict[str, str | None] = {}
        self.api_token = api_token
        self.pat = pat
        categories = {**DEFAULT_STATUS_CATEGORIES, **(status_categories or {})}
        self.workflow = Workflow(workflow or DEFAULT_WORKFLOW, categories)
        self._lock = threading.RLock()
        self._issues: dict[str, dict[str, Any]] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self._groups: dict[str, list[str]] = {}
        self._failures: list[_Failure] = []
        self._holds: list[list] = []
        self.held: Recorder[str] = Recorder("held JIRA requests", str)
        self._ids = itertools.count(10001)
        self._recorder: Recorder[RecordedRequest] = Recorder("JIRA requests", describe_request)
        self._me = self._store_user(
            account_id=None if pat else "relance-bot",
            name="relance" if pat else None,
            email=email,
            display_name="Relance",
            locale="en_US",
            time_zone="UTC",
        )
        self._validators = {
            op: contract_validator(spec["request"]) for op, spec in CONTRACT["operations"].items() if spec["request"]
        }
        self.record = record
        self.rate_limit = RateLimit(rate, burst, latency_ms / 1000) if rate else None
        super().__init__(self._build_app(), latency_ms=latency_ms, port=port, expose_stats=expose_stats)

    def stats(self) -> dict[str, Any]:
        limit = self.rate_limit
        return {**super().stats(), "rate_limited": limit.limited if limit else 0,
                "ignored_retry_after": limit.ignored if limit else 0}

    # ------------------------------------------------------------------ test control

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (including rejected ones), oldest first."""
        return self._recorder.items

    def wait_for(self, predicate: Callable[[list[RecordedRequest]], Any], timeout: float = 10.0) -> Any:
        """Block until predicate(requests) is truthy, return it; AssertionError on timeout."""
        return self._recorder.wait_for(predicate, timeout)

    def add_user(
        self,
        account_id: str | None = None,
        name: str | None = None,
        email: str | None = None,
        display_name: str = "Jane Customer",
        locale: str = "en_US",
        time_zone: str = "Europe/Paris",
        active: bool = True,
    ) -> dict[str, Any]:
        """Create (or replace) a user and return it as GET /user shows it.

        Give `account_id` for a Cloud user, `name` for a Data Center one (or both).
        `email=None` models a user who hides their email: no emailAddress anywhere.
        """
        with self._lock:
            key = self._store_user(account_id, name, email, display_name, locale, time_zone, active)
            return self._user_json(key, full=True)

    def add_issue(
        self,
        key: str,
        summary: str = "Cannot log in to the customer portal",
        status: str = "Open",
        reporter: Mapping[str, Any] | str | None = None,
        priority: str = "Medium",
        labels: Iterable[str] = (),
        comments: Iterable[Mapping[str, Any] | str] = (),
        assignee: Mapping[str, Any] | str | None = None,
        issue_type: str = "Task",
        project_name: str | None = None,
        created: datetime | None = None,
    ) -> dict[str, Any]:
        """Create an issue and return it as GET /issue/{key} shows it.

        `reporter`/`assignee` are an account id or username of a user added with
        add_user, or a user dict in JIRA's shape ({"accountId"|"name", "displayName",
        "emailAddress"?, "timeZone"?}), which also registers that user. `comments` are
        strings (written by the reporter, or the API account without a reporter) or dicts
        {"body", "author"?, "created"? (datetime)}.
        """
        with self._lock:
            if status not in self.workflow.categories:
                raise ValueError(f"unknown status {status!r}; workflow has {self.workflow.statuses}")
            if priority not in {name for _, name, _ in PRIORITIES}:
                raise ValueError(f"unknown priority {priority!r}")
            created = created or _now()
            reporter_key = self._user_ref(reporter)
            issue = {
                "id": str(next(self._ids)),
                "key": key,
                "summary": summary,
                "status": status,
                "priority": priority,
                "labels": list(labels),
                "reporter": reporter_key,
                "assignee": self._user_ref(assignee),
                "resolution": None,
                "resolutiondate": None,
                "issuetype": issue_type,
                "project": {"key": key.rsplit("-", 1)[0], "name": project_name or key.rsplit("-", 1)[0]},
                "comments": [],
                "attachments": [],
                "created": created,
                "updated": created,
            }
            if self.workflow.categories[status] == "done":
                issue["resolution"], issue["resolutiondate"] = "Done", created
            for comment in comments:
                if isinstance(comment, str):
                    comment = {"body": comment}
                author = self._user_ref(comment.get("author")) or reporter_key or self._me
                self._append_comment(issue, comment["body"], author, comment.get("created") or created)
            self._issues[key] = issue
            return self._issue_json(issue)

    def issue(self, key: str) -> dict[str, Any]:
        """The issue as GET /rest/api/2/issue/{key} would return it now (a copy)."""
        with self._lock:
            return self._issue_json(self._find_issue(key, for_test=True))

    def set_status(self, key: str, status: str, at: datetime | None = None) -> None:
        """Move an issue to `status` directly, as a human in JIRA's UI (no workflow check);
        `at` backdates the move (and the issue's `updated`)."""
        with self._lock:
            issue = self._find_issue(key, for_test=True)
            if status not in self.workflow.categories:
                raise ValueError(f"unknown status {status!r}; workflow has {self.workflow.statuses}")
            self._move(issue, status, resolution=None, at=at)

    def add_comment(self, key: str, body: str, author: Mapping[str, Any] | str | None = None) -> dict[str, Any]:
        """Add a comment as a human would (default author: the reporter); return it."""
        with self._lock:
            issue = self._find_issue(key, for_test=True)
            author_key = self._user_ref(author) or issue["reporter"] or self._me
            comment = self._append_comment(issue, body, author_key, _now())
            issue["updated"] = comment["created"]
            return self._comment_json(issue, comment)

    def attachments(self, key: str) -> list[dict[str, Any]]:
        """The files attached to an issue, oldest first: {"id", "filename", "size", "mimeType", "data", "author"}."""
        with self._lock:
            return [dict(a) for a in self._find_issue(key, for_test=True)["attachments"]]

    def add_group(self, name: str, members: Iterable[str]) -> None:
        """A JIRA group of existing users (account ids or usernames)."""
        with self._lock:
            for member in members:
                self._user_ref(member)
            self._groups[name] = list(members)

    def fail_next(
        self, count: int = 1, status: int = 429, retry_after: int | None = 1, path_contains: str | None = None,
        after_serving: bool = False, method: str | None = None,
    ) -> None:
        """Answer the next `count` requests (whose path contains `path_contains`, if given)
        with `status` instead of serving them.

        429 comes with Retry-After: `retry_after` seconds and JIRA's rate-limit headers;
        503 carries Retry-After too; other statuses get a JSON error body only.
        With `after_serving`, the request is served (its change applied) and only the
        answer is replaced, as when a proxy in front of JIRA times out on a slow request.
        `method` limits the failure to requests of that HTTP method.
        """
        with self._lock:
            self._failures.append(_Failure(count, status, retry_after, path_contains, after_serving, method))

    # ------------------------------------------------------------------ state helpers

    def _store_user(
        self,
        account_id: str | None,
        name: str | None,
        email: str | None,
        display_name: str,
        locale: str,
        time_zone: str,
        active: bool = True,
    ) -> str:
        if not account_id and not name:
            raise ValueError("a user needs an account_id (Cloud) or a name (Data Center)")
        key = account_id or name
        assert key is not None
        self._users[key] = {
            "accountId": account_id,
            "name": name,
            "email": email,
            "displayName": display_name,
            "locale": locale,
            "timeZone": time_zone,
            "active": active,
        }
        if account_id and name:
            self._users[name] = self._users[key]
        return key

    def _user_ref(self, user: Mapping[str, Any] | str | None) -> str | None:
        """The stored key of `user` (an id/name, or a JIRA-shaped dict registered on the fly)."""
        if user is None:
            return None
        if isinstance(user, str):
            if user not in self._users:
                raise ValueError(f"unknown user {user!r}; add it with add_user() first")
            return user
        account_id = user.get("accountId")
        name = user.get("name")
        if not account_id and not name:
            account_id = f"auto-{next(self._ids)}"
        return self._store_user(
            account_id,
            name,
            user.get("emailAddress"),
            user.get("displayName", name or account_id or "?"),
            user.get("locale", "en_US"),
            user.get("timeZone", "Europe/Paris"),
            user.get("active", True),
        )

    def _find_issue(self, key_or_id: str, for_test: bool = False) -> dict[str, Any]:
        issue = self._issues.get(key_or_id) or next(
            (i for i in self._issues.values() if i["id"] == key_or_id or i["key"] == key_or_id.upper()), None
        )
        if issue is None:
            if for_test:
                raise KeyError(f"no issue {key_or_id!r} in the JIRA stand-in")
            raise JiraError(404, [ISSUE_NOT_FOUND])
        return issue

    def _append_comment(
        self,
        issue: dict[str, Any],
        body: str,
        author: str,
        created: datetime,
        visibility: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store a comment on `issue` (author is a user key) and return the stored record."""
        comment = {
            "id": str(next(self._ids)),
            "author": author,
            "body": body,
            "created": created,
            "updated": created,
            "visibility": visibility,
        }
        issue["comments"].append(comment)
        return comment

    def _move(self, issue: dict[str, Any], status: str, resolution: str | None, at: datetime | None = None) -> None:
        """Set the status, keeping resolution consistent with the status category."""
        now = at or _now()
        done = self.workflow.categories[status] == "done"
        if done and (resolution or not issue["resolution"]):
            issue["resolution"], issue["resolutiondate"] = resolution or "Done", now
        elif not done:
            issue["resolution"] = issue["resolutiondate"] = None
        issue["status"] = status
        issue["updated"] = now

    # ------------------------------------------------------------------ JSON views

    def _base(self) -> str:
        try:
            return request.url_root.rstrip("/")
        except RuntimeError:  # outside a request (test-control methods)
            return self.url or "http://127.0.0.1"

    def _user_json(self, key: str | None, full: bool = False) -> dict[str, Any] | None:
        """A user as JIRA shows it: UserDetails inside issues, User for /user (full)."""
        if key is None:
            return None
        user = self._users[key]
        base = self._base()
        if user["accountId"]:
            data: dict[str, Any] = {"self": f"{base}/rest/api/2/user?accountId={user['accountId']}",
                                    "accountId": user["accountId"], "accountType": "atlassian"}
        else:
            data = {"self": f"{base}/rest/api/2/user?username={user['name']}", "key": user["name"].lower()}
        if user["name"]:
            data["name"] = user["name"]
        if user["email"]:
            data["emailAddress"] = user["email"]
        avatar = f"{base}/secure/useravatar?ownerId={key}"
        data["avatarUrls"] = {f"{n}x{n}": f"{avatar}&size={n}" for n in (48, 24, 16, 32)}
        data.update(displayName=user["displayName"], active=user["active"], timeZone=user["timeZone"])
        if full:
            data.update(locale=user["locale"], groups={"size": 1, "items": []},
                        applicationRoles={"size": 1, "items": []}, expand="groups,applicationRoles")
        return data

    def _status_json(self, status: str) -> dict[str, Any]:
        base = self._base()
        category = STATUS_CATEGORIES[self.workflow.categories[status]]
        status_id = self.workflow.status_ids[status]
        return {
            "self": f"{base}/rest/api/2/status/{status_id}",
            "description": "",
            "iconUrl": f"{base}/images/icons/statuses/generic.png",
            "name": status,
            "id": status_id,
            "statusCategory": {"self": f"{base}/rest/api/2/statuscategory/{category['id']}", **category},
        }

    def _priority_json(self, name: str) -> dict[str, Any]:
        base = self._base()
        pid, _, colour = next(p for p in PRIORITIES if p[1] == name)
        return {"self": f"{base}/rest/api/2/priority/{pid}", "statusColor": colour, "description": "",
                "iconUrl": f"{base}/images/icons/priorities/{name.lower()}.svg", "name": name, "id": pid}

    def _resolution_json(self, name: str | None) -> dict[str, Any] | None:
        if name is None:
            return None
        rid = next(i for i, n in RESOLUTIONS if n == name)
        return {"self": f"{self._base()}/rest/api/2/resolution/{rid}", "id": rid, "name": name, "description": ""}

    def _comment_json(self, issue: dict[str, Any], comment: dict[str, Any]) -> dict[str, Any]:
        author = self._user_json(comment["author"])
        data = {
            "self": f"{self._base()}/rest/api/2/issue/{issue['id']}/comment/{comment['id']}",
            "id": comment["id"],
            "author": author,
            "body": comment["body"],
            "updateAuthor": author,
            "created": jira_time(comment["created"]),
            "updated": jira_time(comment["updated"]),
            "jsdPublic": True,
        }
        if comment["visibility"]:
            data["visibility"] = dict(comment["visibility"])
        return data

    def _attachment_json(self, attachment: dict[str, Any]) -> dict[str, Any]:
        base = self._base()
        return {"self": f"{base}/rest/api/2/attachment/{attachment['id']}", "id": attachment["id"],
                "filename": attachment["filename"], "author": self._user_json(attachment["author"]),
                "created": jira_time(attachment["created"]), "size": attachment["size"],
                "mimeType": attachment["mimeType"], "content": f"{base}/rest/api/2/attachment/content/{attachment['id']}"}

    def _comments_json(self, issue: dict[str, Any]) -> dict[str, Any]:
        comments = [self._comment_json(issue, c) for c in issue["comments"]]
        return {"comments": comments, "maxResults": len(comments), "total": len(comments), "startAt": 0}

    def _issue_json(self, issue: dict[str, Any], fields_param: str | None = None) -> dict[str, Any]:
        base = self._base()
        project = issue["project"]
        fields = {
            "summary": issue["summary"],
            "status": self._status_json(issue["status"]),
            "priority": self._priority_json(issue["priority"]),
            "labels": list(issue["labels"]),
            "reporter": self._user_json(issue["reporter"]),
            "assignee": self._user_json(issue["assignee"]),
            "resolution": self._resolution_json(issue["resolution"]),
            "resolutiondate": issue["resolutiondate"] and jira_time(issue["resolutiondate"]),
            "project": {"self": f"{base}/rest/api/2/project/{project['key']}", "id": "10000",
                        "key": project["key"], "name": project["name"], "projectTypeKey": "service_desk"},
            "issuetype": {"self": f"{base}/rest/api/2/issuetype/10001", "id": "10001",
                          "name": issue["issuetype"], "subtask": False},
            "comment": self._comments_json(issue),
            "attachment": [self._attachment_json(a) for a in issue["attachments"]],
            "created": jira_time(issue["created"]),
            "updated": jira_time(issue["updated"]),
        }
        return {
            "expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
            "id": issue["id"],
            "self": f"{base}/rest/api/2/issue/{issue['id']}",
            "key": issue["key"],
            "fields": copy.deepcopy(_select_fields(fields, fields_param)),
        }

    # ------------------------------------------------------------------ HTTP

    def _build_app(self) -> Flask:
        app = Flask("jira_standin")
        app.json.sort_keys = False  # keep JIRA's key order (self, id, key, fields...)
        api = "/rest/api/2"

        app.before_request(self._before)

        @app.after_request
        def _record(response: Response) -> Response:
            failure = self._take_failure(request.path, after_serving=True, method=request.method)
            if failure is not None:
                response = _failure_response(failure)
            if self.record:
                record_exchange(self._recorder, request, response)
            return response

        @app.errorhandler(JiraError)
        def _jira_error(error: JiraError):
            return jsonify({"errorMessages": error.messages, "errors": error.errors}), error.status

        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", f"{api}/myself", self._get_myself),
            ("GET", f"{api}/issue/<key>", self._get_issue),
            ("PUT", f"{api}/issue/<key>", self._edit_issue),
            ("GET", f"{api}/issue/<key>/transitions", self._get_transitions),
            ("POST", f"{api}/issue/<key>/transitions", self._do_transition),
            ("GET", f"{api}/issue/<key>/comment", self._get_comments),
            ("POST", f"{api}/issue/<key>/comment", self._add_comment),
            ("POST", f"{api}/issue/<key>/attachments", self._add_attachment),
            ("GET", f"{api}/attachment/content/<attachment_id>", self._get_attachment_content),
            ("GET", f"{api}/priority", self._get_priorities),
            ("GET", f"{api}/user", self._get_user),
            ("GET", f"{api}/group/member", self._get_group_members),
            ("GET", f"{api}/status", self._get_statuses),
            ("GET", f"{api}/project/<key>/statuses", self._get_project_statuses),
            ("GET", WEBHOOKS, self._get_webhooks),
            ("POST", WEBHOOKS, self._create_webhook),
            ("GET", f"{WEBHOOKS}/<webhook_id>", self._get_webhook),
            ("PUT", f"{WEBHOOKS}/<webhook_id>", self._update_webhook),
            ("DELETE", f"{WEBHOOKS}/<webhook_id>", self._delete_webhook),
            ("POST", f"{api}/search", self._search_v2),
            ("POST", "/rest/api/3/search/jql", self._search_jql),
        ]
        for method, rule, view in routes:
            app.add_url_rule(rule, f"{method} {rule}", view, methods=[method])
        return app

    def hold(self, path_contains: str, count: int = 1) -> threading.Event:
        """Make the next `count` requests whose path contains `path_contains` wait until the
        returned Event is set (as a slow JIRA would); `held` records each one as it starts waiting."""
        release = threading.Event()
        with self._lock:
            self._holds.append([path_contains, count, release])
        return release

    def _before(self) -> Response | None:
        """Held requests wait, then injected failures, authentication, the JSON content-type check."""
        with self._lock:
            hold = next((h for h in self._holds if h[1] > 0 and h[0] in request.path), None)
            if hold:
                hold[1] -= 1
        if hold:
            self.held.add(request.path)
            hold[2].wait(timeout=60)
        if self.rate_limit is not None:
            scope = (request.method, request.url_rule.rule if request.url_rule else request.path)
            wait = self.rate_limit.check(scope)
            if wait is not None:
                return _failure_response(_Failure(0, 429, wait, None))
        failure = self._take_failure(request.path, after_serving=False, method=request.method)
        if failure is not None:
            return _failure_response(failure)
        if not self._authenticated(request.headers.get("Authorization", "")):
            return self._unauthenticated()
        if request.method in ("POST", "PUT") and request.mimetype in XSRF_CHECKED \
                and request.headers.get("X-Atlassian-Token", "").strip().lower() not in ("no-check", "nocheck"):
            return Response("XSRF check failed", 403, mimetype="text/plain")
        wanted = "multipart/form-data" if request.path.endswith("/attachments") else "application/json"
        if request.method in ("POST", "PUT") and request.mimetype != wanted:
            return Response(status=415)
        return None

    def _take_failure(self, path: str, after_serving: bool, method: str) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.after_serving != after_serving or failure.method not in (None, method):
                    continue
                if failure.remaining > 0 and (failure.path_contains is None or failure.path_contains in path):
                    failure.remaining -= 1
                    return failure
        return None

    def _authenticated(self, header: str) -> bool:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return decoded == f"{self.email}:{self.api_token}"
        return scheme.lower() == "bearer" and self.pat is not None and credentials.strip() == self.pat

    def _unauthenticated(self) -> Response:
        headers = {"WWW-Authenticate": 'Basic realm="protected-area"'}
        if request.headers.get("Authorization"):
            headers["X-Seraph-LoginReason"] = "AUTHENTICATED_FAILED"
        if self.pat is None:
            return Response(CLOUD_UNAUTHENTICATED, 401, headers, mimetype="text/plain")
        response = jsonify({"errorMessages": [DC_UNAUTHENTICATED], "errors": {}})
        response.status_code = 401
        response.headers.update(headers)
        return response

    def _body(self, operation: str) -> dict[str, Any]:
        """The request's JSON body, checked against the contract schema of `operation`."""
        raw = request.get_data(cache=True)
        if not raw.strip():
            raise JiraError(400, ["No content to map to Object due to end of input"])
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise JiraError(400, [f"Unexpected character in JSON body: {exc}"]) from None
        problems = sorted(self._validators[operation].iter_errors(body), key=lambda e: list(e.absolute_path))
        if problems:
            raise JiraError(400, [_schema_message(e) for e in problems])
        if not isinstance(body, dict):
            raise JiraError(400, ["Request body must be a JSON object"])
        return body

    def _search_matches(self, jql: str) -> list[dict[str, Any]]:
        """The issues `jql` finds, by key; 400 with JIRA's kind of message for JQL it does not parse."""
        found = _JQL.fullmatch(jql.strip())
        if not found:
            raise JiraError(400, [f"Error in the JQL Query: the stand-in does not understand {jql!r}"])
        statuses = {name.casefold() for name in re.findall(r'"((?:[^"\\]|\\.)*)"', found.group("statuses"))}
        amount, unit = int(found.group("amount")), found.group("unit")
        since = _now() - timedelta(minutes=amount * {"m": 1, "h": 60, "d": 1440, "w": 10080}[unit])
        matching = [i for i in self._issues.values() if i["status"].casefold() in statuses and i["updated"] >= since]
        return sorted(matching, key=lambda i: (i["project"]["key"], int(i["key"].rsplit("-", 1)[1])))

    def _search_v2(self):
        """Data Center's POST /rest/api/2/search (Cloud answers 410 Gone since 2025)."""
        if self.search_api != "datacenter":
            raise JiraError(410, ["The requested API has been removed. Please migrate to the /rest/api/3/search/jql "
                                  "API. A full migration guideline is available at "
                                  "https://developer.atlassian.com/changelog/#CHANGE-2046"])
        body = self._body("searchForIssuesUsingJqlPost")
        start, size = int(body.get("startAt") or 0), int(body.get("maxResults") or 50)
        fields = ",".join(body.get("fields") or ["*navigable"])
        with self._lock:
            matching = self._search_matches(body.get("jql") or "")
            page = [self._issue_json(i, fields) for i in matching[start:start + size]]
        return jsonify({"expand": "schema,names", "startAt": start, "maxResults": size, "total": len(matching),
                        "issues": page})

    def _search_jql(self):
        """Cloud's enhanced search, POST /rest/api/3/search/jql: nextPageToken paging, `id` only by default."""
        if self.search_api != "cloud":
            raise JiraError(404, ["null for uri: " + request.url])
        body = self._body("searchAndReconsileIssuesUsingJqlPost")
        size = int(body.get("maxResults") or 50)
        token = body.get("nextPageToken")
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        except (ValueError, binascii.Error):
            raise JiraError(400, ["The provided next page token is invalid or expired."]) from None
        fields = ",".join(body.get("fields") or ["id"])
        with self._lock:
            matching = self._search_matches(body.get("jql") or "")
            page = [self._issue_json(i, fields) for i in matching[start:start + size]]
        answer: dict[str, Any] = {"issues": page, "isLast": start + size >= len(matching)}
        if not answer["isLast"]:
            answer["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return jsonify(answer)

    def _get_myself(self):
        with self._lock:
            return jsonify(self._user_json(self._me, full=True))

    def _get_issue(self, key: str):
        with self._lock:
            return jsonify(self._issue_json(self._find_issue(key), request.args.get("fields")))

    def _get_transitions(self, key: str):
        with self._lock:
            issue = self._find_issue(key)
            wanted = request.args.get("transitionId")
            transitions = [
                {
                    "id": tid,
                    "name": name,
                    "to": self._status_json(target),
                    "hasScreen": False,
                    "isGlobal": False,
                    "isInitial": False,
                    "isAvailable": True,
                    "isConditional": False,
                    "isLooped": False,
                }
                for tid, name, target in self.workflow.available(issue["status"])
                if wanted is None or wanted == tid
            ]
            return jsonify({"expand": "transitions", "transitions": transitions})

    def _do_transition(self, key: str):
        with self._lock:
            issue = self._find_issue(key)
            body = self._body("doTransition")
            transition = body.get("transition")
            if not isinstance(transition, dict) or transition.get("id") is None:
                raise JiraError(400, ["Missing 'transition' identifier"])
            tid = str(transition["id"])
            if not tid.isdigit():
                raise JiraError(400, ["'transition' identifier must be an integer"])
            target = next((to for i, _, to in self.workflow.available(issue["status"]) if i == tid), None)
            if target is None:
                raise JiraError(400, [f"Transition id '{tid}' is not valid for this issue."])
            edited = self._edited(issue, body, TRANSITION_SCREEN)
            self._move(edited, target, resolution=edited.pop("_resolution", None))
            self._issues[issue["key"]] = edited
            return Response(status=204)

    def _edit_issue(self, key: str):
        with self._lock:
            issue = self._find_issue(key)
            edited = self._edited(issue, self._body("editIssue"), EDIT_SCREEN)
            edited["updated"] = _now()
            self._issues[issue["key"]] = edited
            return Response(status=204)

    def _get_comments(self, key: str):
        with self._lock:
            return jsonify(self._comments_json(self._find_issue(key)))

    def _add_comment(self, key: str):
        with self._lock:
            issue = self._find_issue(key)
            body = self._body("addComment")
            text = body.get("body")
            if not isinstance(text, str) or not text.strip():
                raise JiraError(400, errors={"comment": "Comment body can not be empty!"})
            if len(text) > MAX_COMMENT_CHARS:       # JIRA's jira.text.field.character.limit
                raise JiraError(400, errors={"comment": "The entered text is too long. It exceeds the allowed "
                                                        f"limit of {MAX_COMMENT_CHARS:,} characters."})
            comment = self._append_comment(issue, text, self._me, _now(), body.get("visibility"))
            issue["updated"] = comment["created"]
            return jsonify(self._comment_json(issue, comment)), 201

    def _add_attachment(self, key: str):
        with self._lock:
            issue = self._find_issue(key)
            files = request.files.getlist("file")
            if not files:
                raise JiraError(400, ["No file was attached: the multipart/form-data part must be named 'file'."])
            uploads = [(f.filename or "unnamed", f.mimetype or "application/octet-stream", f.read()) for f in files]
            for filename, _, data in uploads:
                if len(data) > self.max_attachment_size:
                    raise JiraError(413, [f"The file '{filename}' ({len(data)} bytes) exceeds the maximum attachment "
                                          f"size for issues ({self.max_attachment_size} bytes)."])
            now = _now()
            created = []
            for filename, mime, data in uploads:
                attachment = {"id": str(next(self._ids)), "filename": filename, "size": len(data), "mimeType": mime,
                              "data": data, "author": self._me, "created": now}
                issue["attachments"].append(attachment)
                created.append(self._attachment_json(attachment))
            issue["updated"] = now
            return jsonify(created)

    def _get_attachment_content(self, attachment_id: str):
        with self._lock:
            found = next((a for i in self._issues.values() for a in i["attachments"] if a["id"] == attachment_id), None)
            if found is None:
                raise JiraError(404, [f"The attachment with id '{attachment_id}' does not exist"])
            return Response(found["data"], mimetype=found["mimeType"])

    def _get_priorities(self):
        with self._lock:
            return jsonify([self._priority_json(name) for _, name, _ in PRIORITIES])

    def _get_group_members(self):
        """GET /group/member?groupname=X: a PageBeanUserDetails of the group's users, 50 a page by default."""
        with self._lock:
            name = request.args.get("groupname")
            if not name:
                raise JiraError(400, ["You must provide a group name or a group id."])
            if name not in self._groups:
                raise JiraError(404, [f"Group with name '{name}' does not exist."])
            start = int(request.args.get("startAt", 0))
            size = min(int(request.args.get("maxResults", 50)), 50)
            members = self._groups[name]
            page = members[start:start + size]
            return jsonify({"self": request.url, "maxResults": size, "startAt": start, "total": len(members),
                            "isLast": start + size >= len(members),
                            "values": [self._user_json(m, full=False) for m in page]})

    def _get_statuses(self):
        """GET /status: every status of the workflow, as JIRA's getStatuses lists a site's statuses."""
        with self._lock:
            return jsonify([self._status_json(status) for status in self.workflow.statuses])

    def add_project(self, key: str, statuses: Iterable[str] | None = None) -> None:
        """A project whose workflows use `statuses` (default: every status of the workflow).
        A project some issue belongs to is known without this."""
        with self._lock:
            unknown = [s for s in statuses or () if s not in self.workflow.categories]
            if unknown:
                raise ValueError(f"unknown statuses {unknown}; workflow has {self.workflow.statuses}")
            self._projects[key] = list(statuses) if statuses is not None else None

    def _get_project_statuses(self, key: str):
        """GET /project/{key}/statuses: the project's statuses per issue type (one type, Task, here)."""
        with self._lock:
            known = set(self._projects) | {i["project"]["key"] for i in self._issues.values()}
            if key not in known:
                raise JiraError(404, [f"No project could be found with key '{key}'."])
            statuses = self._projects.get(key) or self.workflow.statuses
            return jsonify([{"self": f"{self._base()}/rest/api/2/issuetype/10001", "id": "10001", "name": "Task",
                             "subtask": False, "statuses": [self._status_json(s) for s in statuses]}])

    # ------------------------------------------------------------------ admin webhooks

    @property
    def webhooks(self) -> list[dict[str, Any]]:
        """The registered webhooks, as GET /rest/webhooks/1.0/webhook shows them (copies)."""
        with self._lock:
            return [self._webhook_json(w) for w in self._webhooks.values()]

    def add_webhook(self, name: str, url: str, events: Iterable[str] = ("jira:issue_created",),
                    jql: str = "") -> dict[str, Any]:
        """Register a webhook as an administrator would in JIRA's UI; return it."""
        with self._lock:
            return self._webhook_json(self._store_webhook(None, {"name": name, "url": url, "events": list(events),
                                                                 "filters": {WEBHOOK_JQL: jql}}))

    def _require_admin(self) -> None:
        if not self.admin:
            raise JiraError(403, [NOT_ADMIN])

    def _webhook_body(self) -> dict[str, Any]:
        raw = request.get_data(cache=True)
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            raise JiraError(400, [f"Unexpected character in JSON body: {exc}"]) from None
        if not isinstance(body, dict):
            raise JiraError(400, ["Request body must be a JSON object"])
        errors = {key: f"The {key} of the webhook is required." for key in ("name", "url")
                  if not isinstance(body.get(key), str) or not body[key].strip()}
        events = body.get("events", [])
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            errors["events"] = "Events must be a list of event names."
        filters = body.get("filters", {})
        if not isinstance(filters, dict) or not all(isinstance(v, str) for v in filters.values()):
            errors["filters"] = "Filters must map a section to a JQL string."
        if body.get("secret") is not None and not isinstance(body["secret"], str):
            errors["secret"] = "The secret must be a string."
        if errors:
            raise JiraError(400, errors=errors)
        return body

    def _store_webhook(self, webhook_id: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        webhook_id = webhook_id or str(next(self._webhook_ids))
        self._webhooks[webhook_id] = {
            "id": webhook_id, "name": body["name"], "url": body["url"], "events": list(body.get("events") or []),
            "filters": dict(body.get("filters") or {}), "excludeBody": bool(body.get("excludeBody", False)),
            "enabled": bool(body.get("enabled", True)), "lastUpdated": int(_now().timestamp() * 1000),
        }
        self.webhook_secrets[webhook_id] = body.get("secret")
        return self._webhooks[webhook_id]

    def _webhook_json(self, webhook: Mapping[str, Any]) -> dict[str, Any]:
        me = self._users[self._me]
        return {"self": f"{self._base()}{WEBHOOKS}/{webhook['id']}", "name": webhook["name"], "url": webhook["url"],
                "events": list(webhook["events"]), "filters": dict(webhook["filters"]),
                "excludeBody": webhook["excludeBody"], "enabled": webhook["enabled"],
                "lastUpdated": webhook["lastUpdated"], "lastUpdatedUser": me["name"] or me["accountId"],
                "lastUpdatedDisplayName": me["displayName"]}

    def _find_webhook(self, webhook_id: str) -> dict[str, Any]:
        if webhook_id not in self._webhooks:
            raise JiraError(404, [f"Webhook with id {webhook_id} does not exist."])
        return self._webhooks[webhook_id]

    def _get_webhooks(self):
        with self._lock:
            self._require_admin()
            return jsonify([self._webhook_json(w) for w in self._webhooks.values()])

    def _get_webhook(self, webhook_id: str):
        with self._lock:
            self._require_admin()
            return jsonify(self._webhook_json(self._find_webhook(webhook_id)))

    def _create_webhook(self):
        with self._lock:
            self._require_admin()
            return jsonify(self._webhook_json(self._store_webhook(None, self._webhook_body()))), 201

    def _update_webhook(self, webhook_id: str):
        with self._lock:
            self._require_admin()
            self._find_webhook(webhook_id)
            return jsonify(self._webhook_json(self._store_webhook(webhook_id, self._webhook_body())))

    def _delete_webhook(self, webhook_id: str):
        with self._lock:
            self._require_admin()
            self._find_webhook(webhook_id)
            del self._webhooks[webhook_id]
            self.webhook_secrets.pop(webhook_id, None)
            return Response(status=204)

    def _get_user(self):
        with self._lock:
            wanted = request.args.get("accountId") or request.args.get("username") or request.args.get("key")
            if not wanted:
                raise JiraError(400, ["The 'accountId' query parameter needs to be provided"])
            if wanted not in self._users:
                raise JiraError(404, [USER_NOT_FOUND])
            return jsonify(self._user_json(wanted, full=True))

    # ------------------------------------------------------------------ edits

    def _edited(self, issue: dict[str, Any], body: Mapping[str, Any], screen: frozenset[str]) -> dict[str, Any]:
        """A copy of `issue` with the body's `fields` and `update` applied.

        Raises JiraError(400, errors={field: message}) without touching `issue` when a
        field is unknown, not on `screen`, set in both `fields` and `update`, or invalid.
        """
        edited = copy.deepcopy(issue)
        fields = body.get("fields") or {}
        update = body.get("update") or {}
        errors: dict[str, str] = {}
        for name in sorted(set(fields) & set(update)):
            errors[name] = f"Field '{name}' cannot be set in both 'fields' and 'update'."
        operations = [(name, "set", value) for name, value in fields.items()]
        for name, ops in update.items():
            operations += [(name, verb, value) for op in ops for verb, value in op.items()]
        for name, verb, value in operations:
            if name in errors:
                continue
            if name not in screen:
                errors[name] = NOT_ON_SCREEN.format(name)
                continue
            try:
                self._apply(edited, name, verb, value)
            except _FieldError as exc:
                errors[name] = str(exc)
        if errors:
            raise JiraError(400, errors=errors)
        return edited

    def _apply(self, issue: dict[str, Any], name: str, verb: str, value: Any) -> None:
        """Apply one field operation (`verb` is set/add/remove/edit) to `issue`."""
        supported = {"summary": {"set"}, "priority": {"set"}, "labels": {"set", "add", "remove"},
                     "comment": {"add"}, "resolution": {"set"}, "assignee": {"set"}}[name]
        if verb not in supported:
            raise _FieldError(f"Operation '{verb}' is not supported for field '{name}'.")
        if name == "summary":
            if not isinstance(value, str) or not value.strip():
                raise _FieldError("You must specify a summary of the issue.")
            if len(value) > 255:
                raise _FieldError("Summary must be less than 255 characters.")
            issue["summary"] = value
        elif name == "priority":
            issue["priority"] = _named_choice(value, [(i, n) for i, n, _ in PRIORITIES], "Priority", "priority")
        elif name == "resolution":
            issue["_resolution"] = _named_choice(value, RESOLUTIONS, "Resolution", "resolution")
        elif name == "labels":
            labels = value if verb == "set" else [value]
            if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
                raise _FieldError("Labels must be strings.")
            for label in labels:
                if " " in label:
                    raise _FieldError(f"The label '{label}' contains spaces which is invalid.")
                if not label or len(label) > 255:
                    raise _FieldError("The label must be between 1 and 255 characters.")
            if verb == "set":
                issue["labels"] = list(dict.fromkeys(labels))
            elif verb == "add" and value not in issue["labels"]:
                issue["labels"].append(value)
            elif verb == "remove" and value in issue["labels"]:
                issue["labels"].remove(value)
        elif name == "assignee":
            # {"accountId": ...} (Cloud) or {"name": ...} (Data Center); null unassigns.
            wanted = None if value is None else (value.get("accountId") or value.get("name")
                                                 if isinstance(value, dict) else False)
            if wanted is False or (wanted is not None and wanted not in self._users):
                raise _FieldError(f"User '{wanted}' cannot be assigned issues.")
            issue["assignee"] = wanted
        elif name == "comment":
            text = value.get("body") if isinstance(value, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise _FieldError("Comment body can not be empty!")
            self._append_comment(issue, text, self._me, _now(), value.get("visibility"))


def _named_choice(value: Any, choices: list[tuple[str, str]], label: str, field: str) -> str:
    """The name of the choice `value` ({"id": ...} or {"name": ...}) designates."""
    if not isinstance(value, dict):
        raise _FieldError(f"Specify the {label} (id or name) in the string format")
    if value.get("id") is None and value.get("name") is None:
        raise _FieldError(f"Could not find valid 'id' or 'name' in {field} object.")
    for cid, name in choices:
        if str(value.get("id")) == cid or value.get("name") == name:
            return name
    raise _FieldError(f"The {field} selected is invalid.")


def _select_fields(fields: dict[str, Any], spec: str | None) -> dict[str, Any]:
    """Apply a ?fields= parameter: names, "*all", "*navigable" (all but comment), "-name"."""
    if not spec:
        return fields
    wanted = [item.strip() for item in spec.split(",") if item.strip()]
    keep = {item for item in wanted if not item.startswith(("-", "*"))}
    if "*all" in wanted:
        keep |= set(fields)
    if "*navigable" in wanted:
        keep |= set(fields) - {"comment"}
    keep -= {item[1:] for item in wanted if item.startswith("-")}
    return {name: value for name, value in fields.items() if name in keep}


def _schema_message(error: Any) -> str:
    where = ".".join(str(part) for part in error.absolute_path) or "body"
    return f"{where}: {error.message}"


def _failure_response(failure: _Failure) -> Response:
    """JIRA's answer for an injected failure of `failure.status`."""
    messages = {
        400: "Bad Request",
        429: "Rate limit exceeded.",
        500: "Internal server error",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }
    response = jsonify({"errorMessages": [messages.get(failure.status, "Request failed")], "errors": {}})
    response.status_code = failure.status
    if failure.retry_after is not None and failure.status in (429, 503):
        response.headers["Retry-After"] = str(failure.retry_after)
    if failure.status == 429:
        reset = _now() + timedelta(seconds=failure.retry_after or 0)
        response.headers["X-RateLimit-Limit"] = "100"
        response.headers["X-RateLimit-Remaining"] = "0"
        response.headers["X-RateLimit-Reset"] = reset.strftime("%Y-%m-%dT%H:%MZ")
        response.headers["RateLimit-Reason"] = "jira-burst-based"
    return response
