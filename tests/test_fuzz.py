"""Mangled JIRA bodies: the edge answers 4xx or 2xx, never 5xx; the pure core raises nothing but PayloadError."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PAYLOADS
from webhooks import create_app
from workers.decisions import decide
from workers.events import parse_event
from workers.exceptions import PayloadError
from workers.lifecycle import TicketMemory
from workers.rules import load_rules
from workers.settings import PROJECT_ROOT

RULES = load_rules(PROJECT_ROOT / "rules.yaml")
BODIES = [json.loads(p.read_text()) for p in sorted(PAYLOADS.glob("*.json"))]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, prefix + (i,))


@st.composite
def mangled_bodies(draw):
    body = json.loads(json.dumps(draw(st.sampled_from(BODIES))))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(paths(body))))
        if not path:
            body = draw(json_values)
            break
        target = body
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = draw(json_values)
    return body


@settings(max_examples=300, deadline=None)
@given(mangled_bodies())
def test_the_core_reads_or_refuses_any_mangled_body(body):
    try:
        event = parse_event(body)
    except PayloadError:
        return
    decide(RULES, event, TicketMemory(), 1_700_000_000_000)


@pytest.fixture(scope="module")
def client(redis_server, tmp_path_factory):
    from workers.settings import Settings
    return create_app(Settings(redis_url=redis_server.url)).test_client()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=mangled_bodies())
def test_the_edge_never_answers_5xx(client, body):
    response = client.post("/webhooks/jira", data=json.dumps(body), content_type="application/json")
    assert response.status_code < 500, response.get_data(as_text=True)
