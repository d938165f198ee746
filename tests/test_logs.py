"""LOG_FORMAT=json: one JSON object a line, naming the ticket and the delivery; text by default."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import payload
from workers.exceptions import ConfigError
from workers.settings import PROJECT_ROOT, Settings


def run_worker_once(redis_server, rules_file, tmp_path, log_format):
    """Queue one real delivery and drain it with `relance worker --burst`; return its stderr."""
    from redis import Redis
    from workers.stores.deliveries import DeliveryStore
    from workers.stores.queue import enqueue_delivery, make_queue
    redis = Redis.from_url(redis_server.url)
    DeliveryStore(redis).put("d-json", json.dumps(payload("02")).encode())
    enqueue_delivery(make_queue(redis), "d-json")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JIRA_", "SENDGRID_", "LOG_"))}
    env.update(REDIS_URL=redis_server.url, RULES_FILE=str(rules_file), OUTBOX_DIR=str(tmp_path / "outbox"),
               LOG_FORMAT=log_format)
    done = subprocess.run([sys.executable, "-m", "relance", "worker", "--burst"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_json_logs_are_one_object_a_line_with_ticket_and_delivery(redis_server, redis, rules_file, tmp_path):
    err = run_worker_once(redis_server, rules_file, tmp_path, "json")
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    ours = [x for x in lines if x["logger"].startswith("relance.") and x.get("delivery") == "d-json"]
    assert ours and all(x["ticket"] for x in ours if x["logger"] == "relance.audit")


def test_text_logs_stay_readable_and_name_the_ticket(redis_server, redis, rules_file, tmp_path):
    err = run_worker_once(redis_server, rules_file, tmp_path, "text")
    assert any(" relance.audit [" in line and "d-json]" in line for line in err.splitlines())
    with pytest.raises(ValueError):
        json.loads(err.splitlines()[0])


def test_an_unknown_log_format_is_a_configuration_error():
    with pytest.raises(ConfigError, match="LOG_FORMAT must be one of text, json"):
        Settings.from_env({"LOG_FORMAT": "xml"})
