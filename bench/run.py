"""Benchmarks, each against its baseline in the same run. Prints a Markdown report.

    .venv/bin/python bench/run.py [--seconds 10] [--events 5000]

1. Webhook acceptance (wrk, 2 threads, 32 connections, unique delivery ids):
   relance's POST /webhooks/jira (verify, dedupe, store, enqueue in Redis) against a bare
   Flask endpoint, both under gunicorn with the same worker count. bench/ingest.py measures
   it in depth (repeats, latency at a fixed rate, Redis commands and CPU per request).
2. Event processing: deliveries processed per second by one `relance worker`
   (each: parse, lock the ticket, decide, one Redis transaction, an email to the outbox),
   against RQ's no-op job rate with its default (forking) worker, and with its SimpleWorker.
   Each rate includes the worker process's start-up.
Needs wrk (Debian package `wrk`). Starts its own Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import WEB_WORKERS, serve, wrk  # noqa: E402
from relance.embedded import EmbeddedRedis  # noqa: E402


def bench_acceptance(redis_url: str, seconds: int) -> dict:
    env = {**os.environ, "REDIS_URL": redis_url}
    results = {}
    for name, app in (("bare Flask", "bench.baseline_app:app"), ("relance", "webhooks:create_app()")):
        proc, url = serve(app, env)
        try:
            wrk(url, 2)                       # warm-up
            results[name] = wrk(url, seconds)
        finally:
            proc.terminate()
            proc.wait()
    queued = Redis.from_url(redis_url).llen("rq:queue:relance")
    results["queued"] = queued
    return results


def noop():
    """RQ baseline job: does nothing."""


def bench_rq_noop(redis_url: str, jobs: int, worker_class: str = "rq.worker.Worker") -> float:
    from rq import Queue
    redis = Redis.from_url(redis_url)
    redis.flushall()
    q = Queue("noop", connection=redis)
    with redis.pipeline() as pipe:
        for _ in range(jobs):
            q.enqueue("bench.run.noop", pipeline=pipe)
        pipe.execute()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", redis_url, "-q",
                    "-w", worker_class, "noop"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return jobs / (time.perf_counter() - started)


def queue_feedback_requests(redis: Redis, events: int) -> None:
    """Store and queue ``events`` *Waiting for feedback* deliveries, one per BENCH-<n> ticket, as the edge does."""
    from workers.stores.deliveries import DeliveryStore
    from workers.stores.queue import enqueue_delivery, make_queue
    template = json.loads((ROOT / "docs/examples/waiting-for-feedback.json").read_text())
    store, queue = DeliveryStore(redis), make_queue(redis)
    for i in range(events):
        body = json.loads(json.dumps(template))
        body["issue"]["key"] = f"BENCH-{i}"
        body["timestamp"] = int(time.time() * 1000)
        store.put(f"ev-{i}", json.dumps(body).encode())
        enqueue_delivery(queue, f"ev-{i}")


def bench_processing(redis_url: str, events: int, outbox: Path) -> float:
    redis = Redis.from_url(redis_url)
    redis.flushall()
    queue_feedback_requests(redis, events)
    env = {**os.environ, "REDIS_URL": redis_url, "OUTBOX_DIR": str(outbox)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "relance", "worker", "--burst"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    sent = len(list(outbox.glob("*.eml")))
    assert sent == events, f"{sent} emails for {events} events"
    return events / elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--events", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", persist=False) as redis:
        acceptance = bench_acceptance(redis.url, args.seconds)
        noop_rate = bench_rq_noop(redis.url, args.events)
        simple_rate = bench_rq_noop(redis.url, args.events, "rq.worker.SimpleWorker")
        processing = bench_processing(redis.url, args.events, Path(tmp) / "outbox")
    bare, ours = acceptance["bare Flask"], acceptance["relance"]
    print(f"## Benchmarks ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)\n")
    print(f"Webhook acceptance: wrk -t2 -c32 -d{args.seconds}s, gunicorn --workers {WEB_WORKERS} (sync)\n")
    print("| endpoint | requests/s | p50 | p99 | errors |\n| --- | --- | --- | --- | --- |")
    for name in ("bare Flask", "relance"):
        r = acceptance[name]
        print(f"| {name} | {r['rate']:.0f} | {r['p50']} | {r['p99']} | {r['errors']} |")
    print(f"\nrelance / bare Flask: **{ours['rate'] / bare['rate']:.2f}x**; deliveries queued: {acceptance['queued']}\n")
    print(f"Event processing, {args.events} events, one worker process\n")
    print("| worker | events/s |\n| --- | --- |")
    print(f"| RQ default worker (forks per job), no-op jobs | {noop_rate:.0f} |")
    print(f"| RQ SimpleWorker (no fork), no-op jobs | {simple_rate:.0f} |")
    print(f"| relance worker, feedback-request events (decide + email to outbox) | {processing:.0f} |")
    print(f"\nrelance / RQ default worker no-op: **{processing / noop_rate:.2f}x**; "
          f"relance / RQ SimpleWorker no-op: {processing / simple_rate:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
