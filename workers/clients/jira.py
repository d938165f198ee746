"""JIRA REST API v2 client (Cloud and Data Center), and the dry-run stand-in used until JIRA is configured."""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

import requests
from urllib3.exceptions import NewConnectionError

from .. import defaults
from ..core.events import ISSUE_ID, ISSUE_KEY
from ..exceptions import JiraError, TransientError, TransitionUnavailable
from ..stores.budget import attempts

log = logging.getLogger("relance.jira")

INLINE_RETRY_AFTER_SECONDS = defaults.INLINE_RETRY_AFTER_SECONDS


def _retry_after(response) -> float | None:
    try:
        return float(response.headers.get("Retry-After"))
    except (TypeError, ValueError):
        return None


def _messages(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        parts = list(body.get("errorMessages") or []) + [f"{k}: {v}" for k, v in (body.get("errors") or {}).items()]
        return "; ".join(parts) or str(body)[:200]
    return str(body)[:200]


def _not_sent(error: requests.RequestException) -> bool:
    """True if the request never reached JIRA (no connection was made), so repeating it is safe."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(error, requests.ConnectionError) and isinstance(reason, NewConnectionError)


def _issue(key: str) -> str:
    """``key`` (or a numeric id) as a URL path segment; JiraError rather than a path that leaves /issue/."""
    if not (ISSUE_KEY.fullmatch(key or "") or ISSUE_ID.fullmatch(key or "")):
        raise JiraError(f"refusing to ask JIRA for {str(key)[:40]!r}: not an issue key or id", status=400)
    return quote(key, safe="")


class JiraClient:
    """Talks to one JIRA site. Basic auth (email + API token, Cloud) or a Bearer PAT (Data Center).

    Raises TransientError on 429/5xx/timeouts (retry later), JiraError on other 4xx.
    A request is repeated in place only when JIRA surely did not act on it: a 429
    whose Retry-After is short, or a connection that was never made. After a 5xx
    or a lost answer the job fails instead, and its retry re-reads JIRA first.
    With a ``budget`` (workers/stores/budget.py), each call waits for its turn in
    the budget all workers share, and a 429's (or 503's) Retry-After pauses them all.
    """

    dry_run = False
    timing = None               # called with each call's seconds (the metrics' relance_remote_seconds)
    budget = None               # a RemoteBudget shared by every worker, set by the worker's context

    def __init__(self, base_url: str, email: str | None = None, api_token: str | None = None,
                 pat: str | None = None, timeout: float = defaults.HTTP_TIMEOUT_SECONDS,
                 pool_size: int = defaults.WORKER_THREADS):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": "relance"})
        # One kept-alive connection per worker thread (requests keeps 10 per host by default).
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.cloud = not pat          # a PAT is Data Center's; Cloud takes an email and an API token
        if pat:
            self.session.headers["Authorization"] = f"Bearer {pat}"
        else:
            self.session.auth = (email, api_token)
        self._priorities = None
        self._myself = None
        self._groups: dict[str, tuple[float, frozenset]] = {}
        self._enhanced_search = self.cloud     # Cloud's /rest/api/3/search/jql, until a 404 says otherwise

    def _call(self, method: str, path: str, api: str = "2", **kw):
        return self._send(method, f"{self.base_url}/rest/api/{api}/{path}", path, **kw)

    def _send(self, method: str, url: str, path: str, **kw):
        """One request to ``url`` (``path`` names it in messages), with _call's retries and errors."""
        for attempt, last in attempts(self.budget):
            started = time.perf_counter()
            try:
                response = self.session.request(method, url, timeout=self.timeout, **kw)
            except requests.RequestException as e:
                if _not_sent(e) and attempt < defaults.INLINE_RETRIES:
                    log.warning("JIRA unreachable for %s %s (%s); trying again", method, path, e.__class__.__name__)
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise TransientError(f"JIRA {method} {path}: {e.__class__.__name__}: {e}") from e
            if self.timing:
                self.timing(time.perf_counter() - started)
            if response.status_code == 429 or response.status_code >= 500:
                wait = _retry_after(response)
                if self.budget is not None and wait is not None and response.status_code in (429, 503):
                    self.budget.pause(wait)             # every worker waits, not only this call
                if response.status_code == 429 and wait is not None and wait <= INLINE_RETRY_AFTER_SECONDS \
                        and not last:
                    log.warning("JIRA answered %s to %s %s; waiting %ss as asked", response.status_code,
                                method, path, wait)
                    if self.budget is None:
                        time.sleep(wait)                # else the budget waits, before the next call
                    continue
                raise TransientError(f"JIRA {method} {path}: {response.status_code} {_messages(response)}",
                                     retry_after=wait)
            if response.status_code >= 400:
                raise JiraError(f"JIRA {method} {path}: {response.status_code} {_messages(response)}",
                                status=response.status_code)
            return response.json() if response.content else None
        raise AssertionError("unreachable")

    def issue(self, key: str, fields: str = "summary,status,priority,labels,reporter,assignee,project,issuetype,comment"):
        """The ticket as JIRA shows it now (the ``fields`` asked for)."""
        return self._call("GET", f"issue/{_issue(key)}", params={"fields": fields})

    def user(self, account_id: str | None = None, username: str | None = None) -> dict:
        params = {"accountId": account_id} if account_id else {"username": username}
        return self._call("GET", "user", params=params)

    def transitions(self, key: str) -> list[dict]:
        return self._call("GET", f"issue/{_issue(key)}/transitions")["transitions"]

    def transition_to(self, key: str, status: str | tuple[str, ...]) -> tuple[str, str]:
        """Move the ticket through the transition that leads to ``status`` (or to the first of
        several status names that one leads to); return (transition name, status reached)."""
        wanted = [status] if isinstance(status, str) else list(status)
        available = self.transitions(key)
        by_target = {(t.get("to") or {}).get("name", "").casefold(): t for t in available}
        chosen = next((by_target[w.casefold()] for w in wanted if w.casefold() in by_target), None)
        if chosen is None:
            leads = ", ".join(sorted({(t.get("to") or {}).get("name", "?") for t in available})) or "none"
            target = repr(wanted[0]) if len(wanted) == 1 else f"any of {', '.join(map(repr, wanted))}"
            raise TransitionUnavailable(f"no transition of {key} leads to {target} (available: {leads})", 400)
        try:
            self._call("POST", f"issue/{_issue(key)}/transitions", json={"transition": {"id": chosen["id"]}})
        except JiraError as e:
            if e.status == 400:
                raise TransitionUnavailable(str(e), 400) from e
            raise
        return chosen.get("name", chosen["id"]), (chosen.get("to") or {}).get("name", wanted[0])

    def priorities(self) -> list[dict]:
        """The site's priorities, highest first."""
        if self._priorities is None:
            self._priorities = self._call("GET", "priority")
        return self._priorities

    def set_priority(self, key: str, name: str) -> None:
        self._call("PUT", f"issue/{_issue(key)}", json={"update": {"priority": [{"set": {"name": name}}]}})

    def add_label(self, key: str, label: str) -> None:
        self._call("PUT", f"issue/{_issue(key)}", json={"update": {"labels": [{"add": label}]}})

    def remove_label(self, key: str, label: str) -> None:
        self._call("PUT", f"issue/{_issue(key)}", json={"update": {"labels": [{"remove": label}]}})

    def assign(self, key: str, account_id: str | None = None, username: str | None = None) -> None:
        """Assign the ticket to an account (Cloud: ``account_id``; Data Center: ``username``), or nobody."""
        who = {"accountId": account_id} if account_id else ({"name": username} if username else None)
        self._call("PUT", f"issue/{_issue(key)}", json={"fields": {"assignee": who}})

    def add_comment(self, key: str, body: str) -> dict:
        """Post ``body`` (wiki markup) as relance's account; the created comment as JIRA returns it
        (``id``, ``body``, ``author``, ``created``): its id tells relance's own comment_created webhook apart."""
        return self._call("POST", f"issue/{_issue(key)}/comment", json={"body": body})

    def add_attachment(self, key: str, filename: str, data: bytes, content_type: str) -> list[dict]:
        """Upload one file to the ticket (POST issue/{key}/attachments, multipart field ``file``); JIRA's
        list of the attachments created (``id``, ``filename``, ``size``, ``mimeType``, ``content``).

        JIRA blocks a multipart POST without ``X-Atlassian-Token: no-check`` (403 "XSRF check failed").
        Answers 413 (JiraError) when the file exceeds the site's attachment size limit. After an unclear
        answer, look at ``attachments`` (filename and size) before uploading again.
        """
        return self._call("POST", f"issue/{_issue(key)}/attachments", headers={"X-Atlassian-Token": "no-check"},
                          files={"file": (filename, data, content_type)})

    def attachments(self, key: str) -> list[dict]:
        """The ticket's attachments as GET issue shows them (``fields.attachment``: id, filename, size, ...)."""
        issue = self.issue(key, fields="attachment") or {}
        return list((issue.get("fields") or {}).get("attachment") or [])

    def myself(self) -> dict:
        """The account relance acts as."""
        if self._myself is None:
            self._myself = self._call("GET", "myself")
        return self._myself

    def statuses(self) -> list[dict]:
        """Every status of the site (GET /status): id, name, statusCategory."""
        return self._call("GET", "status")

    def project_statuses(self, project: str) -> list[dict]:
        """The statuses of a project's workflows, per issue type (GET /project/{key}/statuses)."""
        return self._call("GET", f"project/{quote(project, safe='')}/statuses")

    WEBHOOKS_PATH = "/rest/webhooks/1.0/webhook"

    def webhooks(self) -> list[dict]:
        """The site's admin webhooks (GET /rest/webhooks/1.0/webhook; JIRA administrators only)."""
        return self._send("GET", self.base_url + self.WEBHOOKS_PATH, "webhooks") or []

    def create_webhook(self, body: dict) -> dict:
        """Register an admin webhook; JIRA answers it as GET shows it (with its ``self`` URL)."""
        return self._send("POST", self.base_url + self.WEBHOOKS_PATH, "webhooks", json=body)

    def update_webhook(self, webhook_id: str, body: dict) -> dict:
        """Replace admin webhook ``webhook_id`` (the last segment of its ``self`` URL) with ``body``."""
        return self._send("PUT", f"{self.base_url}{self.WEBHOOKS_PATH}/{quote(str(webhook_id), safe='')}",
                          f"webhooks/{webhook_id}", json=body)

    def group_members(self, group: str) -> frozenset:
        """The ids (accountId, or username and key) of the users of a JIRA group, kept for
        GROUP_CACHE_SECONDS. An unknown group (404) has none."""
        cached = self._groups.get(group)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        members, start = set(), 0
        while True:
            try:
                page = self._call("GET", "group/member", params={"groupname": group, "startAt": start,
                                                                 "maxResults": 50})
            except JiraError as e:
                if e.status != 404:
                    raise
                log.warning("JIRA has no group %r (rules file's customers:)", group)
                break
            values = page.get("values") or []
            members |= {v for u in values for v in (u.get("accountId"), u.get("name"), u.get("key")) if v}
            start += len(values)
            if page.get("isLast", True) or not values:
                break
        self._groups[group] = (time.monotonic() + defaults.GROUP_CACHE_SECONDS, frozenset(members))
        return self._groups[group][1]

    def customer_accounts(self, groups) -> frozenset:
        """Everyone in the rules file's customer groups."""
        return frozenset().union(*(self.group_members(g) for g in groups)) if groups else frozenset()

    def own_accounts(self) -> frozenset:
        """The ids (accountId, or username and key on Data Center) of the account relance acts as."""
        me = self.myself()
        return frozenset(v for v in (me.get("accountId"), me.get("name"), me.get("key")) if v)

    def search(self, jql: str, fields: list[str], page_size: int = 100):
        """Every issue ``jql`` finds (with ``fields``), page after page, as JIRA pages them.

        JIRA Cloud removed /rest/api/2/search in 2025 (410 Gone) for the enhanced
        /rest/api/3/search/jql, paged by ``nextPageToken`` (no ``startAt``, no
        ``total``). Data Center keeps /rest/api/2/search, paged by ``startAt``. A
        Cloud-style client (email + API token) asks the new endpoint first and falls
        back to the old one, for good, when it answers 404 (a Data Center reached
        with basic auth); a PAT (Data Center) goes straight to /rest/api/2/search.
        """
        if self._enhanced_search:
            pages = self._search_jql(jql, fields, page_size)
            try:
                first = next(pages, None)
            except JiraError as e:
                if e.status != 404:
                    raise
                log.info("JIRA has no /rest/api/3/search/jql (Data Center?): using /rest/api/2/search")
                self._enhanced_search = False
            else:
                if first is not None:
                    yield from first
                for page in pages:
                    yield from page
                return
        start = 0
        while True:
            page = self._call("POST", "search", json={"jql": jql, "startAt": start, "maxResults": page_size,
                                                      "fields": fields})
            issues = page.get("issues") or []
            yield from issues
            start += len(issues)
            if not issues or start >= int(page.get("total") or 0):
                return

    def _search_jql(self, jql: str, fields: list[str], page_size: int):
        token = None
        while True:
            body = {"jql": jql, "maxResults": page_size, "fields": fields}
            if token:
                body["nextPageToken"] = token
            page = self._call("POST", "search/jql", api="3", json=body)
            yield page.get("issues") or []
            token = page.get("nextPageToken")
            if page.get("isLast", not token) or not token:
                return

    def has_comment(self, key: str, body: str) -> bool:
        """True if relance's own account has already posted ``body`` on the ticket."""
        me = self.myself()
        mine = {me.get("accountId"), me.get("name"), me.get("key")} - {None}
        start = 0
        while True:
            page = self._call("GET", f"issue/{_issue(key)}/comment", params={"startAt": start, "maxResults": 100})
            comments = page.get("comments") or []
            for c in comments:
                author = c.get("author") or {}
                if isinstance(c.get("body"), str) and c["body"].strip() == body.strip() \
                        and {author.get("accountId"), author.get("name"), author.get("key")} & mine:
                    return True
            start += len(comments)
            if not comments or start >= int(page.get("total") or 0):
                return False


class DryRunJira:
    """Used while JIRA_BASE_URL is unset: reads know nothing, writes are only recorded."""

    dry_run = True
    timing = None           # no remote calls to time
    DEFAULT_PRIORITIES = [{"name": n} for n in ("Highest", "High", "Medium", "Low", "Lowest")]

    def issue(self, key, fields=None):
        return None

    def user(self, account_id=None, username=None):
        return None

    def priorities(self):
        return self.DEFAULT_PRIORITIES

    def own_accounts(self):
        return frozenset()

    def customer_accounts(self, groups):
        return frozenset()          # no JIRA to ask: customer groups are known only with JIRA configured


def make_jira(settings):
    if not settings.jira_configured:
        return DryRunJira()
    return JiraClient(settings.jira_base_url, settings.jira_user_email, settings.reveal("jira_api_token"),
                      settings.reveal("jira_pat"), pool_size=settings.worker_threads)
