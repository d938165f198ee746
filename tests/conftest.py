"""Shared fixtures: a private real Redis per test session, settings pointing at it, the stand-ins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis import Redis

from relance.embedded import EmbeddedRedis
from workers.settings import PROJECT_ROOT, Settings

PAYLOADS = Path(__file__).parent / "payloads"


def payload(name: str) -> dict:
    """A real JIRA webhook body from tests/payloads (see SOURCES.md there)."""
    return json.loads(next(PAYLOADS.glob(f"{name}*.json")).read_text())


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=False) as server:
        yield server


@pytest.fixture
def redis(redis_server):
    client = Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def rules_file(tmp_path):
    """The shipped rules.yaml, copied so a test may edit it."""
    path = tmp_path / "rules.yaml"
    path.write_text((PROJECT_ROOT / "rules.yaml").read_text())
    return path


@pytest.fixture
def settings(redis, redis_server, tmp_path, rules_file):
    return Settings(redis_url=redis_server.url, rules_file=rules_file, outbox_dir=tmp_path / "outbox",
                    mail_from="Acme Support <support@acme.example>")


@pytest.fixture
def jira():
    """The JIRA stand-in with Jane (a customer, French), Sam (support) and SUP-1, In Progress."""
    from tests.standins import JiraStandIn
    with JiraStandIn() as server:
        server.add_user(account_id="acc-jane", email="jane@customer.example", display_name="Jane Customer",
                        locale="fr_FR")
        server.add_user(account_id="acc-sam", email="sam@support.example", display_name="Sam Support")
        server.add_issue("SUP-1", summary="Login fails <script>alert(1)</script>", status="In Progress",
                         reporter="acc-jane", priority="Medium")
        yield server


@pytest.fixture
def sendgrid():
    from tests.standins import SendGridStandIn
    with SendGridStandIn() as server:
        yield server


def service_context(settings, redis, jira, sendgrid):
    """The worker's context with JIRA and SendGrid configured (the stand-ins), as the process's context."""
    from workers import context as process_context
    from workers.context import Context
    ctx = Context.build(settings.replace(
        jira_base_url=jira.url, jira_user_email=jira.email, jira_api_token=jira.api_token,
        sendgrid_api_key=sendgrid.api_key, sendgrid_api_host=sendgrid.url), redis)
    process_context.use(ctx)
    return ctx


@pytest.fixture
def service(settings, redis, jira, sendgrid):
    from workers import context as process_context
    yield service_context(settings, redis, jira, sendgrid)
    process_context.use(None)
