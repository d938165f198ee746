"""POST /webhooks/jira against a real Redis: what JIRA sees, and what gets queued."""

import json

import pytest

from tests.conftest import PAYLOADS, payload
from webhooks import create_app
from webhooks.signature import sign
from workers.stores.deliveries import DeliveryStore
from workers.exceptions import ConfigError
from workers.stores.queue import make_queue
from workers.settings import Settings

URL = "/webhooks/jira"


@pytest.fixture
def client(settings):
    return create_app(settings).test_client()


def post(client, body, delivery="d-1", **headers):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    if delivery:
        headers["X-Atlassian-Webhook-Identifier"] = delivery
    return client.post(URL, data=raw, headers=headers, content_type="application/json")


def queued(redis):
    return make_queue(redis).job_ids


def test_a_delivery_is_queued_with_202(client, redis):
    response = post(client, payload("02"))
    assert response.status_code == 202
    assert response.json == {"status": "queued", "delivery": "d-1"}
    assert queued(redis) == ["delivery-d-1"]
    assert json.loads(DeliveryStore(redis).body("d-1")) == payload("02")


def test_a_redelivery_is_accepted_but_queued_once(client, redis):
    assert post(client, payload("02")).status_code == 202
    second = post(client, payload("02"))
    assert second.status_code == 200 and second.json["status"] == "duplicate"
    assert queued(redis) == ["delivery-d-1"]


def test_a_redelivery_after_processing_is_not_queued_again(client, redis):
    post(client, payload("02"))
    make_queue(redis).empty()
    DeliveryStore(redis).mark_done("d-1", "done")
    assert post(client, payload("02")).json["status"] == "duplicate"
    assert queued(redis) == []


@pytest.mark.parametrize("issue", [{"key": "../../../../rest/api/2/priority"}, {"key": "SUP-1\n"},
                                   {"key": "SUP-1", "id": "1/../2"}])
def test_a_key_or_id_that_could_become_a_path_is_ignored_with_a_reason_and_stores_nothing(client, redis, issue):
    body = payload("02")
    body["issue"].update(issue)
    response = post(client, body)
    assert response.status_code == 200 and response.json["status"] == "ignored"
    assert "is not a JIRA issue" in response.json["reason"]
    assert queued(redis) == [] and DeliveryStore(redis).body("d-1") is None


def test_an_accepted_body_is_kept_until_processed_for_the_whole_retention(settings, redis):
    client = create_app(settings.replace(retention=1000 * 86400)).test_client()
    assert post(client, payload("02")).status_code == 202
    assert 999 * 86400 < redis.ttl("relance:delivery:d-1") <= 1000 * 86400


def test_without_identifier_the_body_hash_dedupes(client, redis):
    assert post(client, payload("02"), delivery=None).status_code == 202
    assert post(client, payload("02"), delivery=None).status_code == 200
    assert post(client, payload("01"), delivery=None).status_code == 202
    assert len(queued(redis)) == 2


def test_identifiers_unfit_for_job_ids_are_hashed(client, redis):
    assert post(client, payload("02"), delivery="a b/c:d").status_code == 202
    assert queued(redis)[0].startswith("delivery-h-")


@pytest.mark.parametrize("raw,reason", [(b"{not json", "malformed JSON"), (b"[1, 2]", "unexpected body"),
                                        (b"\xff\xfe{}", "malformed JSON"), (b"[" * 100_000, "malformed JSON"),
                                        (b'{"hello": 1}', "not a JIRA webhook"),
                                        (b'{"webhookEvent": 7}', "unexpected body")])
def test_malformed_bodies_get_400_and_queue_nothing(client, redis, raw, reason):
    response = post(client, raw)
    assert response.status_code == 400
    assert response.json["error"] == reason and response.json["reason"]
    assert queued(redis) == []


def test_events_no_rule_reads_are_acknowledged_not_queued(client, redis):
    response = post(client, {"webhookEvent": "jira:version_released", "version": {}})
    assert response.status_code == 200 and response.json["status"] == "ignored"
    assert queued(redis) == []


def test_bodies_over_one_mebibyte_get_413(client, redis):
    big = json.dumps({"webhookEvent": "jira:issue_updated", "pad": "x" * (1024 * 1024)}).encode()
    response = post(client, big)
    assert response.status_code == 413
    assert queued(redis) == []


@pytest.fixture
def signed_client(settings):
    return create_app(settings.replace(jira_webhook_secret="s3cret")).test_client()


def test_with_a_secret_signed_deliveries_pass(signed_client, redis):
    raw = json.dumps(payload("02")).encode()
    response = post(signed_client, raw, **{"X-Hub-Signature": sign("s3cret", raw)})
    assert response.status_code == 202


@pytest.mark.parametrize("header", [None, "", "sha256=00", "sha1=abc", "sha256=é", "sha256=" + "é" * 64])
def test_with_a_secret_unsigned_or_badly_signed_deliveries_get_401(signed_client, redis, header):
    headers = {"X-Hub-Signature": header} if header else {}
    response = post(signed_client, json.dumps(payload("02")).encode(), **headers)
    assert response.status_code == 401 and response.json["reason"]
    assert queued(redis) == []


def post_to(client, url, body, **headers):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(url, data=raw, content_type="application/json",
                       headers={"X-Atlassian-Webhook-Identifier": "d-1", **headers})


@pytest.fixture
def token_client(settings):
    return create_app(settings.replace(jira_webhook_token="url-t0ken")).test_client()


def test_with_a_url_token_deliveries_carrying_it_pass(token_client, redis):
    assert post_to(token_client, URL + "?token=url-t0ken", payload("02")).status_code == 202
    assert queued(redis) == ["delivery-d-1"]


@pytest.mark.parametrize("url", [URL, URL + "?token=", URL + "?token=url-t0ke", URL + "?token=url-t0kenX",
                                 URL + "?token=%C3%A9", URL + "?token=%FF", URL + "?tok=url-t0ken"])
def test_with_a_url_token_deliveries_without_it_get_401(token_client, redis, url):
    response = post_to(token_client, url, payload("02"))
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized" and "token" in response.json["reason"]
    assert queued(redis) == []


@pytest.fixture
def token_and_secret_client(settings):
    return create_app(settings.replace(jira_webhook_token="url-t0ken", jira_webhook_secret="s3cret")).test_client()


@pytest.mark.parametrize("token,signed,status", [(True, True, 202), (True, False, 401), (False, True, 401),
                                                 (False, False, 401)])
def test_with_a_secret_and_a_token_both_are_required(token_and_secret_client, redis, token, signed, status):
    raw = json.dumps(payload("02")).encode()
    headers = {"X-Hub-Signature": sign("s3cret", raw)} if signed else {}
    response = post_to(token_and_secret_client, URL + ("?token=url-t0ken" if token else ""), raw, **headers)
    assert response.status_code == status
    assert queued(redis) == (["delivery-d-1"] if status == 202 else [])


def test_redis_down_answers_503_with_retry_after(tmp_path, rules_file):
    from relance.embedded import free_port
    app = create_app(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", rules_file=rules_file))
    response = post(app.test_client(), payload("02"))
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0


@pytest.mark.parametrize("path", sorted(p.name for p in PAYLOADS.glob("*.json")))
def test_every_real_payload_is_accepted_or_cleanly_ignored(client, redis, path):
    response = post(client, (PAYLOADS / path).read_bytes(), delivery=path[:2])
    assert response.status_code in (200, 202), response.json


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "redis": True, "jira": "dry run", "mail": "outbox"}


def test_create_app_reads_the_environment(redis_server, rules_file):
    app = create_app({"REDIS_URL": redis_server.url, "JIRA_WEBHOOK_SECRET": "x", "RULES_FILE": str(rules_file)})
    assert post(app.test_client(), payload("02")).status_code == 401


def test_create_app_reads_the_url_token_from_the_environment(redis_server, rules_file):
    app = create_app({"REDIS_URL": redis_server.url, "JIRA_WEBHOOK_TOKEN": "t", "RULES_FILE": str(rules_file)})
    assert post_to(app.test_client(), URL + "?token=nope", payload("02")).status_code == 401
    assert post_to(app.test_client(), URL + "?token=t", payload("02")).status_code == 202


JIRA = {"jira_base_url": "https://acme.atlassian.net", "jira_user_email": "bot@acme.example",
        "jira_api_token": "api-token"}


def test_with_jira_configured_the_web_refuses_to_start_unauthenticated(settings):
    with pytest.raises(ConfigError) as refused:
        create_app(settings.replace(**JIRA))
    for how in ("JIRA_WEBHOOK_SECRET", "JIRA_WEBHOOK_TOKEN", "?token=", "ALLOW_UNAUTHENTICATED_WEBHOOKS=1"):
        assert how in str(refused.value)


@pytest.mark.parametrize("auth", [{"jira_webhook_secret": "s3cret"}, {"jira_webhook_token": "t0ken"}])
def test_with_jira_configured_a_secret_or_a_token_lets_the_web_start(settings, auth):
    assert create_app(settings.replace(**JIRA, **auth)).test_client().get("/healthz").json["jira"] == "configured"


def test_the_explicit_opt_out_accepts_unauthenticated_deliveries(redis_server, rules_file, redis):
    env = {"REDIS_URL": redis_server.url, "RULES_FILE": str(rules_file), "JIRA_BASE_URL": "https://jira.acme.com",
           "JIRA_PAT": "pat", "ALLOW_UNAUTHENTICATED_WEBHOOKS": "1"}
    assert post(create_app(env).test_client(), payload("02")).status_code == 202


def test_a_dry_run_needs_no_webhook_authentication(settings, redis):
    assert post(create_app(settings).test_client(), payload("02")).status_code == 202


def test_an_unreadable_opt_out_is_refused_naming_the_variable(redis_server, rules_file):
    with pytest.raises(ConfigError, match="ALLOW_UNAUTHENTICATED_WEBHOOKS must be 1 or 0"):
        create_app({"REDIS_URL": redis_server.url, "ALLOW_UNAUTHENTICATED_WEBHOOKS": "please"})


def test_readyz_says_ready_with_redis_and_rules_and_503_with_the_reason_without(client, tmp_path, rules_file):
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["status"] == "ready" and ready.json["rules"] > 0
    from relance.embedded import free_port
    down = create_app(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", rules_file=rules_file,
                               outbox_dir=tmp_path / "o")).test_client()
    answer = down.get("/readyz")
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert answer.json["reasons"][0].startswith("Redis does not answer")
    assert down.get("/healthz").status_code == 200         # liveness is not readiness
