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
