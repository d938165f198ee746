"""The one-round-trip intake: the jobs it writes are RQ's own, its dedupe rules, its single Redis command."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib

import pytest
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.job import Job

from hypothesis import given, settings as hypothesis_settings, strategies as st

from tests.conftest import payload
from webhooks import create_app
from workers.failures import DELIVERY_FUNC, TIMER_FUNC
from workers.stores.connection import redis_from_url
from workers.stores.deliveries import DeliveryStore
from workers.stores.intake import DUPLICATE, QUEUED, Intake, _lua_string
from workers.stores.metrics import KEY as METRICS_KEY
from workers.stores.queue import enqueue_call, make_queue
from workers.stores.views import DELIVERY_LOG_KEY, delivery_page

TIMESTAMPS = {b"created_at", b"enqueued_at"}


@pytest.fixture
def intake(redis):
    return Intake(DeliveryStore(redis), make_queue(redis))


def job_hash(redis, job_id):
    return redis.hgetall(f"rq:job:{job_id}")


def comparable(job_hash: dict) -> dict:
    """A job hash but its timestamps, its call (``data``) decompressed as RQ reads it: the intake
    compresses with a smaller window than zlib.compress, so the bytes differ, not what they say."""
    return {k: zlib.decompress(v) if k == b"data" else v for k, v in job_hash.items() if k not in TIMESTAMPS}


@pytest.mark.parametrize("func,args,options", [
    (DELIVERY_FUNC, ("d-1",), {}),
    (TIMER_FUNC, ("auto-close|SUP-1", "g-7", 1795887714.25), {"timeout": 90}),
    (DELIVERY_FUNC, ("é" * 100,), {"retry": Retry(max=1, interval=[0])}),      # description cut at 75
    ("workers.replies.process_reply", ("r-1", None, 3), {"retry": Retry(max=2, interval=[1, 10])}),
])
def test_the_job_the_intake_writes_is_the_one_rqs_unique_enqueue_writes(redis, intake, func, args, options):
    """Field by field: an RQ upgrade that writes other fields, or other values, fails here."""
    assert intake.accept("ours", b"{}", func, "job-ours", args, **options) == QUEUED
    assert enqueue_call(intake.queue, func, "job-rqs", args, options.get("timeout", 60), retry=options.get("retry"))
    ours, rqs = job_hash(redis, "job-ours"), job_hash(redis, "job-rqs")
    assert comparable(ours) == comparable(rqs)
    assert set(ours) == set(rqs) and TIMESTAMPS <= set(ours)
    assert redis.ttl("rq:job:job-ours") == redis.ttl("rq:job:job-rqs")
    assert intake.queue.job_ids == ["job-ours", "job-rqs"]
    job = Job.fetch("job-ours", connection=redis, serializer=intake.queue.serializer)
    assert (job.func_name, job.args, job.get_status(), job.origin) == (func, list(args), "queued", "relance")
    assert abs(job.enqueued_at.timestamp() - Job.fetch("job-rqs", connection=redis).enqueued_at.timestamp()) < 5


def test_a_new_delivery_is_stored_queued_counted_and_logged(redis, intake):
    log = {"source": "jira", "ticket": "SUP-1", "event": "jira:issue_updated", "delivery": "d-1", "reason": None}
    assert intake.accept("d-1", b'{"a": 1}', DELIVERY_FUNC, "delivery-d-1", ("d-1",), log=log) == QUEUED
    assert intake.deliveries.body("d-1") == b'{"a": 1}'
    assert intake.deliveries.keep - 5 < redis.ttl("relance:delivery:d-1") <= intake.deliveries.keep
    assert intake.queue.job_ids == ["delivery-d-1"]
    assert redis.hget(METRICS_KEY, "deliveries\x1fqueued") == b"1"
    [entry], _ = delivery_page(redis)
    assert {k: v for k, v in entry.items() if k != "id"} == {"source": "jira", "code": "202", "verdict": "queued",
                                                             "ticket": "SUP-1", "event": "jira:issue_updated",
                                                             "delivery": "d-1"}
    assert 0 < redis.ttl(DELIVERY_LOG_KEY) and 0 < redis.ttl(METRICS_KEY)


def test_a_redelivery_whose_job_exists_is_a_duplicate_and_changes_nothing_but_the_count(redis, intake):
    intake.accept("d-1", b"first", DELIVERY_FUNC, "delivery-d-1", ("d-1",))
    assert intake.accept("d-1", b"second", DELIVERY_FUNC, "delivery-d-1", ("d-1",)) == DUPLICATE
    assert intake.queue.job_ids == ["delivery-d-1"]
    assert intake.deliveries.body("d-1") == b"first"
    assert redis.hget(METRICS_KEY, "deliveries\x1fduplicate") == b"1"
    assert [e["code"] for e in delivery_page(redis)[0]] == ["200", "202"]


def test_a_redelivery_of_a_processed_delivery_is_a_duplicate_even_without_its_job(redis, intake):
    intake.accept("d-1", b"{}", DELIVERY_FUNC, "delivery-d-1", ("d-1",))
    intake.queue.empty()
    intake.deliveries.mark_done("d-1", "done")
    assert intake.accept("d-1", b"{}", DELIVERY_FUNC, "delivery-d-1", ("d-1",)) == DUPLICATE
    assert intake.queue.job_ids == [] and not redis.exists("rq:job:delivery-d-1")


def test_a_redelivery_whose_job_is_missing_is_queued_again(redis, intake):
    intake.deliveries.put("d-1", b"{}")            # stored, then Redis lost the job before it was written
    assert intake.accept("d-1", b"{}", DELIVERY_FUNC, "delivery-d-1", ("d-1",)) == QUEUED
    assert intake.queue.job_ids == ["delivery-d-1"]


def test_a_new_delivery_whose_job_outlived_its_body_is_a_duplicate_and_not_queued_twice(redis, intake):
    intake.accept("d-1", b"{}", DELIVERY_FUNC, "delivery-d-1", ("d-1",))
    redis.delete(intake.deliveries.key("d-1"))
    assert intake.accept("d-1", b"{}", DELIVERY_FUNC, "delivery-d-1", ("d-1",)) == DUPLICATE
    assert intake.queue.job_ids == ["delivery-d-1"]
    assert intake.deliveries.body("d-1") == b"{}"          # the job finds its body again


def test_without_a_counter_nothing_is_counted(redis):
    Intake(DeliveryStore(redis), make_queue(redis)).accept("d-1", b"{}", DELIVERY_FUNC, "j", ("d-1",), counter=None)
    assert not redis.exists(METRICS_KEY) and redis.xlen(DELIVERY_LOG_KEY) == 1


# -- what the route costs Redis ------------------------------------------------------

def commands_from_clients(redis_url: str, action) -> list[str]:
    """The commands clients sent Redis while ``action`` ran (commands run by scripts excluded)."""
    redis, signal = Redis.from_url(redis_url), Redis.from_url(redis_url)
    marker = "end-of-monitored-action"
    signal.ping()                                   # connected before: its handshake is not counted
    with redis.monitor() as monitor:
        action()
        signal.echo(marker)
        seen = []
        while marker not in (command := monitor.next_command())["command"]:
            if command["client_type"] != "lua":
                seen.append(command["command"].split()[0].upper())
    return seen


@pytest.fixture
def client(settings):
    return create_app(settings).test_client()


def post(client, body, delivery):
    return client.post("/webhooks/jira", data=json.dumps(body).encode(), content_type="application/json",
                       headers={"X-Atlassian-Webhook-Identifier": delivery})


def round_trips(redis: Redis, action) -> tuple[int, int]:
    """Reads and writes of client sockets Redis made while ``action`` ran (INFO's own left out)."""
    before = redis.info("stats")
    action()
    after = redis.info("stats")
    return tuple(after[f"total_{x}_processed"] - before[f"total_{x}_processed"] - 1 for x in ("reads", "writes"))


def test_an_accepted_delivery_and_a_duplicate_cost_one_redis_round_trip_each(client, redis, redis_server):
    assert post(client, payload("02"), "warm-up").status_code == 202      # loads the script once
    for _ in ("new", "duplicate"):
        deliver = lambda: post(client, payload("02"), "d-1")          # noqa: E731
        assert commands_from_clients(redis_server.url, deliver) == ["SET", "EVALSHA"]     # body, then the script
        assert round_trips(redis, deliver) == (1, 1)                   # sent together, answered together
    assert make_queue(redis).job_ids == ["delivery-warm-up", "delivery-d-1"]


def test_a_redis_that_refuses_writes_gets_503_and_nothing_is_half_written(client, redis):
    assert post(client, payload("02"), "warm-up").status_code == 202
    redis.flushall()
    redis.config_set("maxmemory", 1)                # full, and noeviction: every write is refused
    try:
        response = post(client, payload("02"), "d-1")
    finally:
        redis.config_set("maxmemory", 0)
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert redis.keys("*") == []
    assert post(client, payload("02"), "d-1").status_code == 202          # JIRA's retry is then accepted


def test_rq_info_lists_the_queue_and_its_jobs(client, redis, redis_server):
    for did in ("d-1", "d-2", "d-1"):
        post(client, payload("02"), did)
    assert [q.name for q in Queue.all(connection=redis)] == ["relance"]
    info = subprocess.run([sys.executable, "-m", "rq.cli", "info", "--url", redis_server.url, "-Q", "--raw"],
                          capture_output=True, text=True, check=True).stdout
    assert "queue relance 2" in info, info


def test_a_redis_error_reaches_the_caller(redis_server, rules_file):
    from relance.embedded import free_port
    down = redis_from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1)
    with pytest.raises(RedisError):
        Intake(DeliveryStore(down), make_queue(down)).accept("d-1", b"{}", DELIVERY_FUNC, "j", ("d-1",))


def test_a_restarted_redis_that_forgot_the_script_and_closed_the_connection_is_served_at_once(redis, intake):
    assert intake.accept("d-1", b"{}", DELIVERY_FUNC, "delivery-d-1", ("d-1",)) == QUEUED
    redis.script_flush()
    redis.client_kill_filter(_type="normal", skipme=True)        # as a restart would, closed once Redis
    while len(redis.client_list(_type="normal")) > 1:            # gets back to its event loop
        pass
    assert intake.accept("d-2", b"{}", DELIVERY_FUNC, "delivery-d-2", ("d-2",)) == QUEUED
    assert intake.queue.job_ids == ["delivery-d-1", "delivery-d-2"]


@hypothesis_settings(max_examples=50, deadline=None)
@given(value=st.one_of(st.binary(max_size=64), st.text(max_size=32), st.integers(), st.floats(allow_nan=False)))
def test_a_job_field_written_into_the_script_reaches_redis_as_redis_py_would_send_it(redis_server, value):
    redis = Redis.from_url(redis_server.url)
    sent = redis.connection_pool.get_encoder().encode(value)
    assert redis.eval(f"return {_lua_string(value)}", 0) == sent


def test_the_route_answers_the_same_through_flasks_own_dispatch(settings, redis):
    fast = create_app(settings)
    through_flask = create_app(settings)
    through_flask.wsgi_app = through_flask.wsgi_app.flask          # without webhooks.FastRoutes
    requests = [(payload("02"), "d-1"), (payload("02"), "d-1"), (b"{not json", "d-2"),
                ({"webhookEvent": "jira:version_released"}, "d-3"), (b"x" * (1024 * 1024 + 1), "d-4")]
    answers = []
    for app in (fast, through_flask):
        redis.flushall()
        client, seen = app.test_client(), []
        for body, delivery in requests:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            response = client.post("/webhooks/jira", data=raw, content_type="application/json",
                                   headers={"X-Atlassian-Webhook-Identifier": delivery})
            seen.append((response.status_code, response.data, response.content_type))
        answers.append((seen, [{k: v for k, v in e.items() if k != "id"} for e in delivery_page(redis)[0]]))
    assert answers[0] == answers[1]
    assert [code for code, _, _ in answers[0][0]] == [202, 200, 400, 200, 413]


def test_an_unexpected_error_is_answered_500_as_flasks_error_handler_would_logged_and_counted(settings, redis,
                                                                                           caplog):
    from werkzeug.exceptions import InternalServerError

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    app = create_app(settings)
    app.extensions["relance"].intake.accept = broken
    response = post(app.test_client(), payload("02"), "d-1")
    assert (response.status_code, response.json) == (500, {"error": "internal server error",
                                                            "reason": InternalServerError.description})
    assert "RuntimeError: a bug" in caplog.text
    [entry], _ = delivery_page(redis)
    assert (entry["code"], entry["verdict"], entry["source"]) == ("500", "unavailable", "jira")
