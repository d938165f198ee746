"""Every real JIRA body in tests/payloads is read, with the quirks SOURCES.md lists."""

import pytest

from tests.conftest import PAYLOADS, payload
from workers.core.events import parse_event
from workers.exceptions import PayloadError


# file prefix -> (webhook event, key, status, status change, has comment, reporter email, reporter account id)
EXPECTED = {
    "01": ("jira:issue_updated", "TES-41", "Done", ("In Progress", "Done"), False,
           "some-instance-test@gmail.com", "5c5f880629be9642ba529340"),
    "02": ("jira:issue_updated", "TES-4", "Resolved", ("In Progress", "Resolved"), False, "admin@admin.com", None),
    "03": ("jira:issue_created", "KAN-22", "To Do", (None, "To Do"), False, None,
           "712020:f1ad7cfd-7f82-4dc0-85e4-8bc47bcc08e4"),
    "04": ("jira:issue_updated", "KAN-22", "To Do", None, False, None, "712020:f1ad7cfd-7f82-4dc0-85e4-8bc47bcc08e4"),
    "05": ("jira:issue_updated", "PRJA-42", "To Do", None, True, "creator.user@mattermost.com", None),
    "06": ("jira:issue_updated", "TEST-4", "To Do", None, True, "admin@admin.com", None),
    "07": ("comment_created", "TES-41", "To Do", None, True, None, None),
    "08": ("comment_created", "TEST-24", "To Do", None, True, None, None),
    "09": ("comment_created", None, None, None, True, None, None),
    "10": ("comment_created", "SB-1", "To Do", None, True, None, None),
    "11": ("jira:issue_updated", "JIRATEST1-14", None, None, False, None, None),
    "12": ("jira:issue_updated", "DEMO-1", "Selected for Development", ("In Progress", "Selected for Development"),
           False, None, None),
    "13": ("jira:issue_created", "TEST-4", "To Do", None, False, "admin@admin.com", None),
}


def test_every_shipped_payload_is_covered():
    assert sorted(p.name[:2] for p in PAYLOADS.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("prefix", sorted(EXPECTED))
def test_payload_reads(prefix):
    event = parse_event(payload(prefix))
    webhook_event, key, status, change, has_comment, email, account = EXPECTED[prefix]
    assert event.webhook_event == webhook_event
    assert event.issue_key == key
    assert event.status == status
    assert event.status_change == change
    assert (event.comment is not None) == has_comment
    assert (event.reporter.email if event.reporter else None) == email
    if account:
        assert event.reporter.account_id == account
    assert event.timestamp_ms and event.timestamp_ms > 1_400_000_000_000


def test_server_comment_without_issue_keeps_the_issue_id_from_the_comment_link():
    event = parse_event(payload("09"))
    assert (event.issue_key, event.issue_id) == (None, "10013")
    assert event.comment.author.email


def test_cloud_issue_self_without_issue_segment_still_gives_the_site():
    assert parse_event(payload("03")).site_url == "https://helloworld-test.atlassian.net"
    assert parse_event(payload("06")).site_url == "http://localhost:2990/jira"


def test_capital_s_status_field_is_a_status_change():
    body = payload("02")
    body["changelog"]["items"][0]["field"] = "Status"
    assert parse_event(body).status_change == ("In Progress", "Resolved")


def test_server_users_have_names_and_no_account_id():
    reporter = parse_event(payload("02")).reporter
    assert (reporter.name, reporter.account_id) == ("admin", None)


@pytest.mark.parametrize("body", [[], "x", {}, {"webhookEvent": 3}, {"issue": {"key": "A-1"}}])
def test_non_jira_bodies_are_refused(body):
    with pytest.raises(PayloadError):
        parse_event(body)
