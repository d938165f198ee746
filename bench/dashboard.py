"""The operator dashboard's pages with a full Redis: 100,000 tickets, a 1,000-entry timeline.

    .venv/bin/python bench/dashboard.py [--tickets 100000] [--requests 200] [--gunicorn]

Fills a private Redis, pipelined: per ticket a memory hash, a 5-entry timeline and
a pending timer (so the timer index holds 100,000 members), 2,000 failures, a full
delivery log (10,000), and one ticket, SUP-1, with a 1,000-entry timeline and two
timers. Then times each page's requests (median, p95, max), through Flask's test
client in this process, and with --gunicorn through a real gunicorn (2 workers) over
HTTP on localhost as well.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis import Redis  # noqa: E402

from relance.embedded import EmbeddedRedis  # noqa: E402
from webhooks import create_app  # noqa: E402
from workers.stores.audit import Audit  # noqa: E402
from workers.failures import TIMER_FUNC, FailureStore  # noqa: E402
from workers.settings import Settings  # noqa: E402
from workers.stores.timers import TimerStore  # noqa: E402
from workers.stores.views import log_delivery  # noqa: E402

PASSWORD = "bench-secret"
AUTH = "Basic " + base64.b64encode(f"operator:{PASSWORD}".encode()).decode()
PAGES = ["/operator/tickets/SUP-1", "/operator/tickets/SUP-1?before={older}", "/operator/tickets/SUP-77777",
         "/operator/", "/operator/timers", "/operator/timers?offset=50000", "/operator/failures",
         "/operator/deliveries"]


def fill(redis: Redis, tickets: int) -> str:
    audit, timers = Audit(redis), TimerStore(redis)
    now = time.time()
    pipe = redis.pipeline(transaction=False)
    for i in range(tickets):
        key = f"SUP-{i + 2}"
        pipe.hset(f"relance:ticket:{key}", mapping={"status": "Resolved", "state": "resolved", "since_ms": i})
        pipe.expire(f"relance:ticket:{key}", 86400)
        audit.record(key, "delivery", pipe=pipe, delivery=f"d-{i}", webhook_event="jira:issue_updated",
                     outcome="waiting_for_feedback → resolved")
        audit.record(key, "transition", pipe=pipe, left="waiting_for_feedback", entered="resolved",
                     from_status="Waiting for feedback", to_status="Resolved", inferred=False)
        audit.record(key, "timer armed", pipe=pipe, rule="auto-close", due_ms=int((now + 86400 * 5) * 1000),
                     generation=f"g{i}")
        audit.record(key, "rule fired", pipe=pipe, rule="resolved-notice", delivery=f"d-{i}")
        audit.record(key, "effect done", pipe=pipe, rule="resolved-notice", action="email", effect=f"e{i}",
                     detail="sent", to=["jdoe@customer.example"])
        timers.arm("auto-close", key, now + 60 + i * 5, f"g{i}", pipe=pipe)
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    for i in range(1000):       # SUP-1: a full timeline, every kind the page describes
        kind = ["delivery", "transition", "rules skipped", "timer armed", "effect done", "effect failed"][i % 6]
        pipe.xadd(Audit.key("SUP-1"), {"kind": kind, "data": json.dumps({
            "rule": "auto-close", "delivery": f"d-{i}", "outcome": "resolved → reopened", "why": "not in state",
            "rules": {"a": "no", "b": "no", "c": "not this event"}, "due_ms": int(now * 1000), "action": "email",
            "detail": "SendGrid refused: 403 sender not verified", "to": ["jane@customer.example"],
            "from_status": "Resolved", "to_status": "Reopened"})})
    pipe.expire(Audit.key("SUP-1"), 86400)
    timers.arm("auto-close", "SUP-1", now + 3600, "g1", pipe=pipe)
    timers.arm("support-silence", "SUP-1", now + 7200, "g1", pipe=pipe)
    for i in range(10_000):
        log_delivery(pipe, 86400, code=202, verdict="queued", ticket=f"SUP-{i + 2}", event="jira:issue_updated",
                     delivery=f"d-{i}")
    pipe.execute()
    failures = FailureStore(redis)
    for i in range(2000):
        failures.record(f"timer-{i:016x}-g1", TIMER_FUNC, (f"auto-close|SUP-{i + 2}", "g1", now), f"SUP-{i + 2}",
                        "JiraUnavailable: 503 Service Unavailable", 9)
    return redis.xrevrange(Audit.key("SUP-1"), count=101)[-1][0].decode()


def stats(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return (f"median {statistics.median(ms):6.1f} ms · p95 {ms[int(len(ms) * .95) - 1]:6.1f} ms · "
            f"max {ms[-1]:6.1f} ms")


def time_client(app, path: str, n: int) -> list[float]:
    client = app.test_client()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = client.get(path, headers={"Authorization": AUTH})
        out.append(time.perf_counter() - t0)
        assert response.status_code == 200, (path, response.status_code)
    return out


def time_http(base: str, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        request = urllib.request.Request(base + path, headers={"Authorization": AUTH})
        t0 = time.perf_counter()
        with urllib.request.urlopen(request) as response:
            response.read()
        out.append(time.perf_counter() - t0)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--gunicorn", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", persist=False) as server:
        redis = Redis.from_url(server.url)
        t0 = time.perf_counter()
        older = fill(redis, args.tickets)
        print(f"filled in {time.perf_counter() - t0:.0f} s: {redis.dbsize():,} keys, "
              f"{redis.zcard('relance:timers'):,} timers, {redis.xlen(Audit.key('SUP-1')):,} entries on SUP-1, "
              f"used_memory {redis.info('memory')['used_memory_human']}\n")
        settings = Settings(redis_url=server.url, operator_password=PASSWORD, outbox_dir=Path(tmp) / "outbox")
        app = create_app(settings)
        print(f"Flask test client, {args.requests} requests each:")
        for page in PAGES:
            path = page.format(older=older)
            print(f"  {path:<42} {stats(time_client(app, path, args.requests))}")
        if args.gunicorn:
            port = free_port()
            env = {**os.environ, "REDIS_URL": server.url, "OPERATOR_PASSWORD": PASSWORD}
            proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                                     "webhooks:create_app()"], cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                base = f"http://127.0.0.1:{port}"
                for _ in range(100):
                    try:
                        urllib.request.urlopen(base + "/healthz").read()
                        break
                    except OSError:
                        time.sleep(0.1)
                print(f"\ngunicorn (2 sync workers) over HTTP, {args.requests} requests each:")
                for page in PAGES:
                    path = page.format(older=older)
                    time_http(base, path, 5)      # warm both workers
                    print(f"  {path:<42} {stats(time_http(base, path, args.requests))}")
            finally:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
