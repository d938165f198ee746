"""Mangled JIRA deliveries: the edge answers 4xx or 2xx, never 5xx, and 2xx only to an authenticated one;
the pure core raises nothing but PayloadError."""

import hashlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PAYLOADS
from webhooks import create_app
from webhooks.signature import sign
from workers.core.decisions import decide
from workers.core.events import parse_event
from workers.exceptions import PayloadError
from workers.core.lifecycle import TicketMemory
from workers.core.rules import load_rules
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


SECRET, TOKEN = "fuzz-s3cret", "fuzz-t0ken-7c1d"
# Header values as a server hands them over: any code point but the line breaks HTTP forbids.
header_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\x00"), max_size=80)
non_ascii = st.text(st.characters(min_codepoint=0x80, blacklist_categories=["Cs"]), min_size=1, max_size=70)


@st.composite
def deliveries(draw):
    """(raw body, headers, query string, signed right, token right) of a delivery, mangled every way."""
    raw = json.dumps(draw(mangled_bodies())).encode()
    right_signatures = [sign(SECRET, raw), sign(SECRET, raw).upper(), " " + sign(SECRET, raw) + " "]
    wrong_signatures = st.one_of(
        st.none(), st.just(""), st.just("sha256="), header_text, header_text.map("sha256=".__add__),
        non_ascii.map("sha256=".__add__), st.just(sign("another secret", raw)), st.just(sign(SECRET, raw + b" ")),
        st.just("sha1=" + hashlib.sha1(raw).hexdigest()), st.just(sign(SECRET, raw)[:-1] + "é"))
    signed = draw(st.booleans())
    signature = draw(st.sampled_from(right_signatures) if signed else wrong_signatures)
    with_token = draw(st.booleans())
    query = {"token": TOKEN} if with_token else draw(st.one_of(
        st.just({}), st.just({"token": ""}), header_text.map(lambda t: {"token": t}),
        non_ascii.map(lambda t: {"token": t}), st.just({"token": TOKEN + "x"}), st.just({"token": TOKEN[:-1]}),
        st.just({"token": TOKEN.upper()}), st.just({"tok": TOKEN}),
        st.sampled_from(["token=%FF%FE", "token=%E2%82", "token=%00" + TOKEN, "token"])))
    identifier = draw(st.one_of(
        st.none(), st.just(""), header_text, non_ascii, st.text("abc/.\\", max_size=30),
        st.sampled_from(["../../etc/passwd", "/webhooks/jira", "C:\\x", "a" * 5000, "é" * 2000])))
    content_type = draw(st.one_of(st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded",
         "multipart/form-data", "multipart/form-data; boundary=x", ""]), header_text))
    headers = {name: value for name, value in (("X-Hub-Signature", signature),
                                               ("X-Atlassian-Webhook-Identifier", identifier),
                                               ("Content-Type", content_type)) if value is not None}
    return raw, headers, query, signed, with_token


@pytest.fixture(scope="module")
def clients(redis_server):
    """A web edge per authentication mode: none (JIRA dry run), signature, URL token, both."""
    from workers.settings import Settings
    base = Settings(redis_url=redis_server.url)
    return {mode: create_app(base.replace(**auth)).test_client() for mode, auth in {
        "none": {}, "secret": {"jira_webhook_secret": SECRET}, "token": {"jira_webhook_token": TOKEN},
        "both": {"jira_webhook_secret": SECRET, "jira_webhook_token": TOKEN}}.items()}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from(["none", "secret", "token", "both"]), delivery=deliveries())
def test_the_edge_never_answers_5xx_and_accepts_only_authenticated_deliveries(clients, mode, delivery):
    raw, headers, query, signed, with_token = delivery
    response = clients[mode].post("/webhooks/jira", data=raw, headers=headers, query_string=query)
    assert response.status_code < 500, response.get_data(as_text=True)
    authentic = (signed or mode in ("none", "token")) and (with_token or mode in ("none", "secret"))
    if authentic:
        assert response.status_code != 401, response.json
    else:
        assert response.status_code == 401 and response.json["reason"], response.get_data(as_text=True)
