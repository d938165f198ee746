"""The JIRA and SendGrid stand-ins answer as the real APIs do.

JIRA is exercised with plain `requests`; SendGrid both with `requests` and with the
official `sendgrid` library pointed at the stand-in, which is how relance talks to it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from python_http_client.exceptions import BadRequestsError, TooManyRequestsError, UnauthorizedError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Mail

from tests.standins import JiraStandIn, SendGridStandIn
from tests.standins.jira import CONTRACT, DEFAULT_WORKFLOW, contract_validator

CONTRACTS = Path(__file__).parent / "contracts"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def jira():
    with JiraStandIn() as server:
        server.add_user(account_id="5b10-jane", email="jane@example.com", display_name="Jane Customer")
        server.add_issue("SUP-1", summary="Printer on fire", reporter="5b10-jane", labels=["printer"])
        yield server


@pytest.fixture
def api(jira):
    """A requests session authenticated as the stand-in's API account."""
    with requests.Session() as session:
        session.auth = (jira.email, jira.api_token)
        session.headers["Accept"] = "application/json"
        yield session


@pytest.fixture
def sendgrid_server():
    with SendGridStandIn() as server:
        yield server


def assert_contract(operation: str, body) -> None:
    """`body` matches the success response schema JIRA publishes for `operation`."""
    schema = CONTRACT["operations"][operation]["response"]["schema"]
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in contract_validator(schema).iter_errors(body)]
    assert not errors, errors


def transitions(api, jira, key="SUP-1") -> dict[str, str]:
    """{target status name: transition id} currently offered for `key`."""
    response = api.get(f"{jira.url}/rest/api/2/issue/{key}/transitions")
    assert response.status_code == 200
    return {t["to"]["name"]: t["id"] for t in response.json()["transitions"]}


def mail_body(**overrides) -> dict:
    body = {
        "personalizations": [{"to": [{"email": "jane@example.com", "name": "Jane"}]}],
        "from": {"email": "support@example.com", "name": "Support"},
        "subject": "About SUP-1",
        "content": [{"type": "text/plain", "value": "Hello"}, {"type": "text/html", "value": "<p>Hello</p>"}],
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def send(server: SendGridStandIn, body, key: str = "SG.test-key") -> requests.Response:
    return requests.post(f"{server.url}/v3/mail/send", json=body, headers={"Authorization": f"Bearer {key}"})


# --------------------------------------------------------------------------- JIRA: auth


@pytest.mark.parametrize(
    "auth_header",
    [None, "Basic cmVsYW5jZUBleGFtcGxlLmNvbTp3cm9uZw==", "Bearer jira-token", "Basic !!!", "Token abc"],
)
def test_jira_rejects_missing_or_wrong_credentials_like_cloud(jira, auth_header):
    headers = {"Authorization": auth_header} if auth_header else {}
    response = requests.get(f"{jira.url}/rest/api/2/issue/SUP-1", headers=headers)
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == "Client must be authenticated to access this resource."
    assert "WWW-Authenticate" in response.headers
    assert (response.headers.get("X-Seraph-LoginReason") == "AUTHENTICATED_FAILED") == bool(auth_header)


def test_jira_accepts_basic_api_token_and_data_center_pat():
    with JiraStandIn(email="bot@example.com", api_token="tok", pat="pat-123") as server:
        server.add_issue("OPS-7")
        url = f"{server.url}/rest/api/2/issue/OPS-7"
        assert requests.get(url, auth=("bot@example.com", "tok")).status_code == 200
        assert requests.get(url, headers={"Authorization": "Bearer pat-123"}).status_code == 200
        denied = requests.get(url, headers={"Authorization": "Bearer nope"})
        assert denied.status_code == 401
        assert denied.json() == {
            "errorMessages": ["You are not authenticated. Authentication required to perform this operation."],
            "errors": {},
        }
        me = requests.get(f"{server.url}/rest/api/2/myself", headers={"Authorization": "Bearer pat-123"}).json()
        assert me["name"] == "relance" and me["emailAddress"] == "bot@example.com"


# --------------------------------------------------------------------------- JIRA: issues


def test_jira_issue_has_the_published_shape(jira, api):
    response = api.get(f"{jira.url}/rest/api/2/issue/SUP-1")
    assert response.status_code == 200
    issue = response.json()
    assert_contract("getIssue", issue)
    assert issue["key"] == "SUP-1" and issue["self"].endswith(f"/rest/api/2/issue/{issue['id']}")
    fields = issue["fields"]
    assert fields["summary"] == "Printer on fire"
    assert fields["status"]["name"] == "Open"
    assert fields["status"]["statusCategory"]["key"] == "new"
    assert fields["priority"] == {**fields["priority"], "name": "Medium", "id": "3"}
    assert fields["labels"] == ["printer"]
    assert fields["reporter"]["accountId"] == "5b10-jane"
    assert fields["reporter"]["emailAddress"] == "jane@example.com"
    assert fields["reporter"]["timeZone"] == "Europe/Paris"
    assert fields["assignee"] is None
    assert fields["project"]["key"] == "SUP"
    assert fields["comment"] == {"comments": [], "maxResults": 0, "total": 0, "startAt": 0}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", fields["created"])


def test_jira_fields_parameter_limits_the_fields(jira, api):
    fields = api.get(f"{jira.url}/rest/api/2/issue/SUP-1", params={"fields": "status,labels"}).json()["fields"]
    assert set(fields) == {"status", "labels"}
    navigable = api.get(f"{jira.url}/rest/api/2/issue/SUP-1", params={"fields": "*navigable,-labels"}).json()
    assert "comment" not in navigable["fields"] and "labels" not in navigable["fields"]
    assert "summary" in navigable["fields"]


def test_jira_unknown_issue_is_404_with_jira_message(jira, api):
    response = api.get(f"{jira.url}/rest/api/2/issue/NOPE-9")
    assert response.status_code == 404
    assert response.json() == {
        "errorMessages": ["Issue does not exist or you do not have permission to see it."],
        "errors": {},
    }


def test_jira_issue_can_be_read_by_id(jira, api):
    issue_id = jira.issue("SUP-1")["id"]
    assert api.get(f"{jira.url}/rest/api/2/issue/{issue_id}").json()["key"] == "SUP-1"


# --------------------------------------------------------------------------- JIRA: transitions


def test_jira_offers_only_transitions_from_the_current_status(jira, api):
    response = api.get(f"{jira.url}/rest/api/2/issue/SUP-1/transitions")
    assert_contract("getTransitions", response.json())
    offered = {t["name"]: t["to"]["name"] for t in response.json()["transitions"]}
    assert offered == DEFAULT_WORKFLOW["Open"]
    jira.set_status("SUP-1", "Waiting for feedback")
    assert set(transitions(api, jira)) == {"Open", "Resolved", "Closed"}
    jira.set_status("SUP-1", "Closed")
    assert set(transitions(api, jira)) == {"Reopened"}


def test_jira_transition_names_never_equal_status_names(jira, api):
    statuses = set(jira.workflow.statuses)
    for status in statuses:
        jira.set_status("SUP-1", status)
        names = {t["name"] for t in api.get(f"{jira.url}/rest/api/2/issue/SUP-1/transitions").json()["transitions"]}
        assert names and not names & statuses


def test_jira_transition_moves_the_issue_and_sets_resolution(jira, api):
    ids = transitions(api, jira)
    response = api.post(
        f"{jira.url}/rest/api/2/issue/SUP-1/transitions",
        json={"transition": {"id": ids["Resolved"]}, "update": {"comment": [{"add": {"body": "Fixed."}}]}},
    )
    assert response.status_code == 204 and response.content == b""
    fields = jira.issue("SUP-1")["fields"]
    assert fields["status"]["name"] == "Resolved"
    assert fields["resolution"]["name"] == "Done"
    assert fields["comment"]["comments"][-1]["body"] == "Fixed."

    reopen = transitions(api, jira)["Reopened"]
    assert api.post(f"{jira.url}/rest/api/2/issue/SUP-1/transitions", json={"transition": {"id": reopen}}).ok
    assert jira.issue("SUP-1")["fields"]["resolution"] is None


def test_jira_rejects_a_transition_unavailable_from_the_current_status(jira, api):
    jira.set_status("SUP-1", "Closed")
    resolve_id = next(tid for (name, _), tid in jira.workflow.transition_ids.items() if name == "Resolve")
    response = api.post(f"{jira.url}/rest/api/2/issue/SUP-1/transitions", json={"transition": {"id": resolve_id}})
    assert response.status_code == 400
    assert response.json() == {"errorMessages": [f"Transition id '{resolve_id}' is not valid for this issue."],
                               "errors": {}}
    assert jira.issue("SUP-1")["fields"]["status"]["name"] == "Closed"


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "Missing 'transition' identifier"),
        ({"transition": {"id": "abc"}}, "'transition' identifier must be an integer"),
    ],
)
def test_jira_rejects_malformed_transition_requests(jira, api, body, message):
    response = api.post(f"{jira.url}/rest/api/2/issue/SUP-1/transitions", json=body)
    assert response.status_code == 400
    assert response.json()["errorMessages"] == [message]


def test_jira_transition_rejects_fields_not_on_its_screen(jira, api):
    ids = transitions(api, jira)
    response = api.post(f"{jira.url}/rest/api/2/issue/SUP-1/transitions",
                        json={"transition": {"id": ids["In Progress"]}, "fields": {"labels": ["x"]}})
    assert response.status_code == 400
    assert "labels" in response.json()["errors"]
    assert jira.issue("SUP-1")["fields"]["status"]["name"] == "Open"


def test_jira_custom_workflow():
    workflow = {"New": {"Triage": "Triaged"}, "Triaged": {"Finish": "Done"}}
    with JiraStandIn(workflow=workflow, status_categories={"New": "new", "Done": "done"}) as server:
        server.add_issue("X-1", status="New")
        with requests.Session() as session:
            session.auth = (server.email, server.api_token)
            ids = transitions(session, server, "X-1")
            assert set(ids) == {"Triaged"}
            session.post(f"{server.url}/rest/api/2/issue/X-1/transitions", json={"transition": {"id": ids["Triaged"]}})
        assert server.issue("X-1")["fields"]["status"]["statusCategory"]["key"] == "indeterminate"
    with pytest.raises(ValueError, match="also a status name"):
        JiraStandIn(workflow={"Open": {"Closed": "Closed"}})


# --------------------------------------------------------------------------- JIRA: edits


def test_jira_edit_applies_label_and_priority_updates(jira, api):
    url = f"{jira.url}/rest/api/2/issue/SUP-1"
    response = api.put(url, json={"update": {"labels": [{"add": "escalated"}, {"remove": "printer"}],
                                             "priority": [{"set": {"name": "High"}}]}})
    assert response.status_code == 204
    fields = jira.issue("SUP-1")["fields"]
    assert fields["labels"] == ["escalated"] and fields["priority"]["name"] == "High"

    assert api.put(url, json={"fields": {"priority": {"id": "1"}, "labels": ["a", "b"]}}).status_code == 204
    fields = jira.issue("SUP-1")["fields"]
    assert fields["priority"]["name"] == "Highest" and fields["labels"] == ["a", "b"]


@pytest.mark.parametrize(
    "body, field, message",
    [
        ({"fields": {"priority": {"id": "42"}}}, "priority", "The priority selected is invalid."),
        ({"fields": {"priority": {"name": "Urgent!!"}}}, "priority", "The priority selected is invalid."),
        ({"fields": {"priority": "High"}}, "priority", "Specify the Priority (id or name) in the string format"),
        ({"fields": {"priority": {}}}, "priority", "Could not find valid 'id' or 'name' in priority object."),
        ({"update": {"labels": [{"add": "two words"}]}}, "labels",
         "The label 'two words' contains spaces which is invalid."),
        ({"fields": {"status": {"name": "Closed"}}}, "status",
         "Field 'status' cannot be set. It is not on the appropriate screen, or unknown."),
    ],
)
def test_jira_edit_rejects_invalid_fields_without_applying_anything(jira, api, body, field, message):
    before = jira.issue("SUP-1")
    body = {**body, "update": {**body.get("update", {}), "summary": [{"set": "Changed"}]}}
    response = api.put(f"{jira.url}/rest/api/2/issue/SUP-1", json=body)
    assert response.status_code == 400
    assert response.json() == {"errorMessages": [], "errors": {field: message}}
    assert jira.issue("SUP-1") == before


def test_jira_validates_bodies_against_the_published_schema(jira, api):
    response = api.put(f"{jira.url}/rest/api/2/issue/SUP-1", json={"update": {"labels": {"add": "x"}}})
    assert response.status_code == 400
    assert response.json()["errors"] == {}
    assert "update.labels" in response.json()["errorMessages"][0]
    response = api.put(f"{jira.url}/rest/api/2/issue/SUP-1", json={"update": {"labels": [{"append": "x"}]}})
    assert response.status_code == 400


def test_jira_rejects_invalid_json_and_non_json_content(jira, api):
    url = f"{jira.url}/rest/api/2/issue/SUP-1"
    response = api.put(url, data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["errorMessages"]
    assert api.put(url, data=b"", headers={"Content-Type": "application/json"}).status_code == 400
    assert api.put(url, data=json.dumps({"fields": {}})).status_code == 415


# --------------------------------------------------------------------------- JIRA: comments


def test_jira_v2_comment_takes_a_plain_string_body(jira, api):
    response = api.post(f"{jira.url}/rest/api/2/issue/SUP-1/comment", json={"body": "We are on it."})
    assert response.status_code == 201
    comment = response.json()
    assert_contract("addComment", comment)
    assert comment["body"] == "We are on it."
    assert comment["author"]["accountId"] == "relance-bot"
    listed = api.get(f"{jira.url}/rest/api/2/issue/SUP-1/comment").json()
    assert_contract("getComments", listed)
    assert [c["id"] for c in listed["comments"]] == [comment["id"]]


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"body": {"type": "doc", "version": 1, "content": []}}, "errorMessages"),  # a v3 ADF body
        ({"body": ""}, {"comment": "Comment body can not be empty!"}),
        ({}, {"comment": "Comment body can not be empty!"}),
    ],
)
def test_jira_rejects_comment_bodies_v2_does_not_take(jira, api, body, expected):
    response = api.post(f"{jira.url}/rest/api/2/issue/SUP-1/comment", json=body)
    assert response.status_code == 400
    if expected == "errorMessages":
        assert response.json()["errorMessages"] and response.json()["errors"] == {}
    else:
        assert response.json() == {"errorMessages": [], "errors": expected}
    assert jira.issue("SUP-1")["fields"]["comment"]["total"] == 0


def test_jira_test_control_comment_is_authored_by_the_reporter(jira, api):
    jira.add_comment("SUP-1", "Any news?")
    comments = api.get(f"{jira.url}/rest/api/2/issue/SUP-1").json()["fields"]["comment"]["comments"]
    assert comments[-1]["author"]["accountId"] == "5b10-jane" and comments[-1]["body"] == "Any news?"


# --------------------------------------------------------------------------- JIRA: priorities and users


def test_jira_priorities_are_listed_highest_first(jira, api):
    response = api.get(f"{jira.url}/rest/api/2/priority")
    assert_contract("getPriorities", response.json())
    assert [(p["id"], p["name"]) for p in response.json()] == [
        ("1", "Highest"), ("2", "High"), ("3", "Medium"), ("4", "Low"), ("5", "Lowest")]
    assert all(p["self"].endswith(f"/rest/api/2/priority/{p['id']}") for p in response.json())


def test_jira_user_lookup_and_hidden_email(jira, api):
    jira.add_user(account_id="5b10-private", email=None, display_name="Private Person", locale="fr_FR")
    user = api.get(f"{jira.url}/rest/api/2/user", params={"accountId": "5b10-jane"}).json()
    assert_contract("getUser", user)
    assert (user["emailAddress"], user["locale"], user["timeZone"]) == ("jane@example.com", "en_US", "Europe/Paris")
    private = api.get(f"{jira.url}/rest/api/2/user", params={"accountId": "5b10-private"}).json()
    assert_contract("getUser", private)
    assert "emailAddress" not in private and private["locale"] == "fr_FR"

    jira.add_issue("SUP-2", reporter="5b10-private")
    assert "emailAddress" not in jira.issue("SUP-2")["fields"]["reporter"]

    missing = api.get(f"{jira.url}/rest/api/2/user", params={"accountId": "nobody"})
    assert missing.status_code == 404
    assert missing.json()["errorMessages"] == ["Specified user does not exist or you do not have required permissions"]
    assert api.get(f"{jira.url}/rest/api/2/user").status_code == 400


def test_jira_data_center_user_by_username(jira, api):
    jira.add_user(name="jdoe", email="jdoe@example.com", display_name="John Doe")
    user = api.get(f"{jira.url}/rest/api/2/user", params={"username": "jdoe"}).json()
    assert user["name"] == "jdoe" and "accountId" not in user and user["emailAddress"] == "jdoe@example.com"


def test_jira_reporter_given_as_a_dict_is_registered(jira, api):
    jira.add_issue("SUP-3", reporter={"accountId": "5b10-bob", "displayName": "Bob", "timeZone": "Asia/Tokyo"})
    reporter = jira.issue("SUP-3")["fields"]["reporter"]
    assert reporter["displayName"] == "Bob" and reporter["timeZone"] == "Asia/Tokyo"
    assert api.get(f"{jira.url}/rest/api/2/user", params={"accountId": "5b10-bob"}).status_code == 200


# --------------------------------------------------------------------------- JIRA: failures and waiting


def test_jira_rate_limit_answers_429_with_retry_after(jira, api):
    jira.fail_next(count=2, status=429, retry_after=3)
    for _ in range(2):
        response = api.get(f"{jira.url}/rest/api/2/issue/SUP-1")
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "3"
        assert response.headers["X-RateLimit-Remaining"] == "0"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", response.headers["X-RateLimit-Reset"])
        assert response.json()["errorMessages"]
    assert api.get(f"{jira.url}/rest/api/2/issue/SUP-1").status_code == 200
    assert [r.status for r in jira.requests] == [429, 429, 200]


def test_jira_failures_can_target_a_path(jira, api):
    jira.fail_next(status=503, retry_after=5, path_contains="/transitions")
    assert api.get(f"{jira.url}/rest/api/2/issue/SUP-1").status_code == 200
    response = api.get(f"{jira.url}/rest/api/2/issue/SUP-1/transitions")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    jira.fail_next(status=500, retry_after=None)
    response = api.get(f"{jira.url}/rest/api/2/priority")
    assert response.status_code == 500 and "Retry-After" not in response.headers


def test_jira_records_requests_and_wait_for_blocks_until_they_arrive(jira, api):
    def later():
        api.post(f"{jira.url}/rest/api/2/issue/SUP-1/comment", json={"body": "async"})

    timer = threading.Timer(0.2, later)
    timer.start()
    posts = jira.wait_for(lambda reqs: [r for r in reqs if r.method == "POST"], timeout=5)
    timer.join()
    assert posts[0].path == "/rest/api/2/issue/SUP-1/comment"
    assert posts[0].json == {"body": "async"} and posts[0].status == 201
    assert posts[0].headers["Authorization"].startswith("Basic ")
    with pytest.raises(AssertionError, match=r"(?s)timed out after 0.1s.*POST /rest/api/2/issue/SUP-1/comment -> 201"):
        jira.wait_for(lambda reqs: any(r.method == "DELETE" for r in reqs), timeout=0.1)


def test_jira_set_status_acts_like_a_human(jira):
    jira.set_status("SUP-1", "Resolved")
    assert jira.issue("SUP-1")["fields"]["resolution"]["name"] == "Done"
    with pytest.raises(ValueError):
        jira.set_status("SUP-1", "Nowhere")
    with pytest.raises(KeyError):
        jira.issue("SUP-404")


# --------------------------------------------------------------------------- SendGrid


def test_sendgrid_accepts_a_valid_mail_with_202_and_message_id(sendgrid_server):
    response = send(sendgrid_server, mail_body())
    assert response.status_code == 202
    assert response.content == b""
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", response.headers["X-Message-Id"])
    assert sendgrid_server.messages == [mail_body()]
    assert sendgrid_server.requests[-1].response_headers["X-Message-Id"] == response.headers["X-Message-Id"]


def test_sendgrid_auth_failures(sendgrid_server):
    missing = requests.post(f"{sendgrid_server.url}/v3/mail/send", json=mail_body())
    assert missing.status_code == 401
    assert missing.json() == {"errors": [{"field": None, "message": "authorization required"}]}
    wrong = send(sendgrid_server, mail_body(), key="SG.other")
    assert wrong.status_code == 401
    assert wrong.json() == {"errors": [{"message": "The provided authorization grant is invalid, expired, or revoked",
                                        "field": None, "help": None}]}
    assert sendgrid_server.messages == []


def test_sendgrid_key_without_mail_send_scope_is_403():
    with SendGridStandIn(forbidden_keys=["SG.read-only"]) as server:
        response = send(server, mail_body(), key="SG.read-only")
        assert response.status_code == 403
        assert response.json()["errors"][0]["message"] == "access forbidden"


@pytest.mark.parametrize(
    "body, field, message_start",
    [
        (mail_body(**{"from": None}), "from.email", "The from object must be provided"),
        (mail_body(personalizations=[]), "personalizations", "The personalizations field is required"),
        (mail_body(personalizations=[{"cc": [{"email": "a@example.com"}]}]), "personalizations.0.to",
         "The to array is required"),
        (mail_body(personalizations=[{"to": []}]), "personalizations.0.to", "The to array is required"),
        (mail_body(subject=None), "subject", "The subject is required"),
        (mail_body(content=None), "content", "Unless a valid template_id is provided"),
        (mail_body(content=[{"type": "text/plain", "value": ""}]), "content.0.value",
         "The content value must be a string at least one character"),
        (mail_body(content=[{"type": "text/html", "value": "<p>x</p>"}, {"type": "text/plain", "value": "x"}]),
         "content", "Following RFC 1341, section 7.2"),
        (mail_body(**{"from": {"email": "not-an-address"}}), "from.email", "The from email does not contain"),
        (mail_body(personalizations=[{"to": [{"email": "a@example.com"}], "bcc": [{"email": "A@example.com"}]}]),
         "personalizations.0", "Each email address in the personalization block should be unique"),
        (mail_body(send_at="tomorrow"), "send_at", "Invalid type. Expected: integer, given: string."),
        (mail_body(attachments=[{"content": "not base64!", "filename": "a.txt"}]), "attachments.0.content",
         "The attachment content must be base64 encoded."),
        (mail_body(categories=[f"c{i}" for i in range(11)]), "categories", ""),
    ],
)
def test_sendgrid_rejects_invalid_mails_with_its_error_shape(sendgrid_server, body, field, message_start):
    response = send(sendgrid_server, body)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert all(set(error) == {"message", "field", "help"} for error in errors)
    assert any(e["field"] == field and e["message"].startswith(message_start) for e in errors), errors
    assert sendgrid_server.messages == []


def test_sendgrid_rejects_a_body_that_is_not_json(sendgrid_server):
    response = requests.post(f"{sendgrid_server.url}/v3/mail/send", data=b"{oops",
                             headers={"Authorization": "Bearer SG.test-key", "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Bad Request", "field": None, "help": None}]}


def test_sendgrid_template_mail_needs_no_subject_or_content(sendgrid_server):
    body = mail_body(subject=None, content=None, template_id="d-0123456789abcdef0123456789abcdef")
    body["personalizations"][0]["dynamic_template_data"] = {"issue": "SUP-1"}
    assert send(sendgrid_server, body).status_code == 202


def test_sendgrid_sandbox_mode_validates_without_delivering(sendgrid_server):
    response = send(sendgrid_server, mail_body(mail_settings={"sandbox_mode": {"enable": True}}))
    assert response.status_code == 200
    assert sendgrid_server.messages == []


def test_sendgrid_rate_limit_answers_429_with_its_headers(sendgrid_server):
    sendgrid_server.fail_next(status=429, reset_in=30)
    response = send(sendgrid_server, mail_body())
    assert response.status_code == 429
    assert response.json() == {"errors": [{"field": None, "message": "too many requests"}]}
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert int(response.headers["X-RateLimit-Limit"]) > 0
    reset = int(response.headers["X-RateLimit-Reset"])
    assert 25 <= reset - datetime.now(timezone.utc).timestamp() <= 31
    sendgrid_server.fail_next(count=1, status=503)
    assert send(sendgrid_server, mail_body()).status_code == 503
    assert send(sendgrid_server, mail_body()).status_code == 202
    assert len(sendgrid_server.messages) == 1


def test_official_sendgrid_library_talks_to_the_stand_in(sendgrid_server):
    client = SendGridAPIClient(api_key="SG.test-key", host=sendgrid_server.url)
    message = Mail(
        from_email=("support@example.com", "Support"),
        to_emails="jane@example.com",
        subject="Your ticket SUP-1",
        plain_text_content="We are on it.",
        html_content="<p>We are on it.</p>",
    )
    response = client.send(message)
    assert response.status_code == 202
    assert response.headers["X-Message-Id"]
    sent = sendgrid_server.wait_for(lambda msgs: msgs[-1] if msgs else None)
    assert sent["subject"] == "Your ticket SUP-1"
    assert sent["personalizations"][0]["to"] == [{"email": "jane@example.com"}]
    assert [c["type"] for c in sent["content"]] == ["text/plain", "text/html"]
    request = sendgrid_server.requests[-1]
    assert request.headers["Authorization"] == "Bearer SG.test-key"
    assert request.headers["User-Agent"].startswith("sendgrid/")


def test_official_sendgrid_library_sees_api_errors(sendgrid_server):
    message = Mail(from_email="support@example.com", to_emails="jane@example.com", subject="Hi",
                   plain_text_content="Hello")
    with pytest.raises(UnauthorizedError) as unauthorized:
        SendGridAPIClient(api_key="SG.wrong", host=sendgrid_server.url).send(message)
    assert unauthorized.value.status_code == 401

    client = SendGridAPIClient(api_key="SG.test-key", host=sendgrid_server.url)
    sendgrid_server.fail_next(status=429, reset_in=1)
    with pytest.raises(TooManyRequestsError) as limited:
        client.send(message)
    assert limited.value.headers["X-RateLimit-Remaining"] == "0"

    bad = message.get()
    bad["content"] = [{"type": "text/plain", "value": ""}]
    with pytest.raises(BadRequestsError) as rejected:
        client.send(bad)  # the library posts a dict as-is
    assert rejected.value.to_dict["errors"][0]["field"] == "content.0.value"


def test_sendgrid_wait_for_blocks_until_a_message_arrives(sendgrid_server):
    timer = threading.Timer(0.2, send, args=(sendgrid_server, mail_body(subject="Later")))
    timer.start()
    subjects = sendgrid_server.wait_for(lambda msgs: [m["subject"] for m in msgs], timeout=5)
    timer.join()
    assert subjects == ["Later"]
    with pytest.raises(AssertionError, match="timed out"):
        sendgrid_server.wait_for(lambda msgs: len(msgs) > 1, timeout=0.1)


# --------------------------------------------------------------------------- contracts


def _extract_module():
    spec = importlib.util.spec_from_file_location("contracts_extract", CONTRACTS / "extract.py")
    extract = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extract)
    return extract


def _specs_or_skip(extract) -> Path:
    specs = extract.find_specs()
    if specs is None:
        pytest.skip(f"no API specs at {', '.join(map(str, extract.specs_candidates()))}: they are in "
                    f"shared/specs beside the clone (as in CI), or set {extract.SPECS_ENV}")
    return specs


def test_contract_files_are_up_to_date_with_the_specs():
    """Re-running tests/contracts/extract.py reproduces the committed files (when specs are available)."""
    extract = _extract_module()
    specs = _specs_or_skip(extract)
    jira_doc = extract.extract_jira(specs / extract.JIRA_SPEC)
    sendgrid_doc = extract.extract_sendgrid(specs / extract.SENDGRID_SPEC)
    assert json.loads((CONTRACTS / "jira-v2-subset.json").read_text()) == jira_doc
    assert json.loads((CONTRACTS / "sendgrid-mail-send.schema.json").read_text()) == sendgrid_doc


def test_the_freshness_check_runs_in_a_clone_reached_through_a_symlink(tmp_path):
    """A shell in <workspace>/clone, a symlink, with <workspace>/shared/specs beside it: the check runs."""
    specs = _specs_or_skip(_extract_module())
    workspace, elsewhere = tmp_path / "workspace", tmp_path / "elsewhere" / "clone"
    (workspace / "shared").mkdir(parents=True)
    (workspace / "shared" / "specs").symlink_to(specs)
    root = CONTRACTS.parents[1]
    shutil.copytree(root / "tests", elsewhere / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "pyproject.toml", elsewhere)
    (workspace / "clone").symlink_to(elsewhere)
    env = {k: v for k, v in os.environ.items() if k != "RELANCE_SPECS_DIR"}
    env |= {"PWD": str(workspace / "clone"), "PYTHONPATH": str(root)}     # the code under test stays this one
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
                             "tests/test_standins.py::test_contract_files_are_up_to_date_with_the_specs"],
                            cwd=workspace / "clone", env=env, capture_output=True, text=True, timeout=60)
    assert "1 passed" in result.stdout, result.stdout + result.stderr


def test_group_members_are_served_in_pages_as_jira_does(jira, api):
    for i in range(60):
        jira.add_user(account_id=f"acc-{i}", email=None, display_name=f"User {i}")
    jira.add_group("customers", [f"acc-{i}" for i in range(60)])
    first = api.get(f"{jira.url}/rest/api/2/group/member", params={"groupname": "customers"}).json()
    assert_contract("getUsersFromGroup", first)
    assert (len(first["values"]), first["total"], first["isLast"]) == (50, 60, False)
    second = api.get(f"{jira.url}/rest/api/2/group/member", params={"groupname": "customers", "startAt": 50}).json()
    assert (len(second["values"]), second["isLast"]) == (10, True)
    missing = api.get(f"{jira.url}/rest/api/2/group/member", params={"groupname": "nobody"})
    assert missing.status_code == 404


def test_jira_rate_limit_refuses_an_endpoint_until_the_wait_it_announced_is_over():
    with JiraStandIn(rate=2, burst=1) as jira, requests.Session() as api:
        jira.add_issue("SUP-1")
        api.auth = (jira.email, jira.api_token)
        issue = f"{jira.url}/rest/api/2/issue/SUP-1"
        assert api.get(issue).status_code == 200
        refused = api.get(issue)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert refused.headers["RateLimit-Reason"] == "jira-burst-based"
        assert api.get(f"{jira.url}/rest/api/2/priority").status_code == 200     # each endpoint has its own
        assert api.get(issue).status_code == 429                                 # still within the wait
        assert jira.stats()["rate_limited"] == 2 and jira.stats()["statuses"] == {"200": 2, "429": 2}


def test_stand_ins_answer_as_late_as_asked():
    import time
    with SendGridStandIn(latency_ms=300) as sendgrid:
        started = time.monotonic()
        requests.post(f"{sendgrid.url}/v3/mail/send", json={}, timeout=5)
        assert time.monotonic() - started >= 0.3


def test_the_stand_ins_run_as_a_process_of_their_own_for_benchmarks():
    process = subprocess.Popen([sys.executable, "-m", "tests.standins", "--issues", "2", "--jira-rate", "5"],
                               cwd=Path(__file__).parent.parent, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(process.stdout.readline())
        issue = requests.get(f"{info['jira']}/rest/api/2/issue/SUP-2", auth=(info["jira_email"], info["jira_token"]),
                             timeout=5).json()
        assert issue["fields"]["status"]["name"] == "Waiting for feedback"
        assert issue["fields"]["reporter"]["emailAddress"] == "customer2@customer.example"
        stats = requests.get(f"{info['jira']}/_standin/stats", timeout=5).json()
        assert stats == {"statuses": {"200": 1}, "rate_limited": 0, "ignored_retry_after": 0}
        assert requests.get(f"{info['sendgrid']}/_standin/stats", timeout=5).json()["tickets_by_messages"] == {}
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
