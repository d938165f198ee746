"""Webhook bodies shaped like JIRA Cloud's, built from the JIRA stand-in's current issue."""

from __future__ import annotations

import itertools
import time

_ids = itertools.count(1)


def _cloud_user(user, cloud=True):
    if not user or not cloud:
        return user
    return {k: v for k, v in user.items() if k != "emailAddress"}   # Cloud hides emails in payloads


def webhook_body(jira, key, from_status=None, to_status=None, comment=None, ts_ms=None, actor=None, cloud=True):
    """The body JIRA would POST for ``key`` as the stand-in shows it now.

    ``cloud``: users without emailAddress and no comments, as JIRA Cloud sends; else as Server does.
    """
    issue = jira.issue(key)
    fields = issue["fields"]
    if cloud:
        fields.pop("comment", None)
    fields["reporter"] = _cloud_user(fields.get("reporter"), cloud)
    fields["assignee"] = _cloud_user(fields.get("assignee"), cloud)
    body = {
        "timestamp": ts_ms or int(time.time() * 1000),
        "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": "issue_generic",
        "user": _cloud_user(actor or fields["reporter"], cloud),
        "issue": issue,
    }
    if to_status is not None:
        body["changelog"] = {"id": str(next(_ids)), "items": [{
            "field": "status", "fieldtype": "jira", "fieldId": "status",
            "from": "1", "fromString": from_status, "to": "2", "toString": to_status}]}
    if comment is not None:
        body["comment"] = comment
    return body


def move(jira, key, to_status, comment=None, **kw):
    """Move the ticket in the stand-in (as a person in JIRA would) and return the webhook body.

    ``comment`` ({"body", "author"}) is made in JIRA with the move, as the transition screen does.
    """
    from_status = jira.issue(key)["fields"]["status"]["name"]
    jira.set_status(key, to_status)
    if comment is not None:
        comment = jira.add_comment(key, comment["body"], author=(comment.get("author") or {}).get("accountId"))
    return webhook_body(jira, key, from_status, to_status, comment=comment, **kw)
