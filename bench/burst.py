"""Bulk burst: the webhooks of a JIRA bulk transition, N tickets moved to Waiting for feedback at once.

    .venv/bin/python bench/burst.py [--tickets 10000] [--workers 2] [--latency-ms 100]
                                    [--jira-limit 50] [--sendgrid-limit 50]
                                    [--jira-rate 0] [--sendgrid-rate 0]

Starts its own Redis; the JIRA and SendGrid stand-ins in a process of their own, answering every call
--latency-ms late, with rate limits as the real services apply them (JIRA: --jira-limit requests a
second per endpoint and method, then 429 with Retry-After; SendGrid: --sendgrid-limit sends a second,
then 429 with X-RateLimit-Reset); the web (gunicorn, as the Procfile, 2 workers) and --workers
`python -m relance worker` processes. wrk posts the N webhooks as fast as it can (bench/burst.lua), each
once (a few more are redeliveries, as JIRA's retries). Then it waits until every ticket has its email.
--jira-rate / --sendgrid-rate set RELANCE_JIRA_RATE / RELANCE_SENDGRID_RATE (relance's own pacing, all
workers together; 0: none, only the pauses 429s ask for).

Prints: answers (all 2xx?), ingest time, time until the last effect, emails per ticket (0 lost, 0
duplicated), 429s each stand-in answered and requests sent while a 429's wait was not over (0: every
worker honoured it), RQ's failed jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.remotes import StandIns, tree_cpu_seconds  # noqa: E402
from relance.embedded import EmbeddedRedis, free_port  # noqa: E402

TOKEN = "burst-bench-token"


def body_template(path: Path) -> None:
    """The docs' example webhook with @KEY@ for the ticket key, dated now."""
    body = json.loads((ROOT / "docs/examples/waiting-for-feedback.json").read_text())
    body["timestamp"] = int(time.time() * 1000)
    body["issue"]["key"] = "@KEY@"
    body["issue"]["self"] = body["issue"]["self"].rsplit("/", 1)[0] + "/@KEY@"
    path.write_text(json.dumps(body))


def start_web(env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
                            "--workers", "2", "webhooks:create_app()"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{url}/healthz", timeout=1).ok:
                return web, url
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or web.poll() is not None:
            raise RuntimeError("the web did not start")
        time.sleep(0.1)


def wait_until_accepted(redis: Redis, tickets: int, timeout: float) -> float:
    """Until the web has stored each ticket's delivery (burst-1..N); when that was."""
    from workers.stores.deliveries import DeliveryStore
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with redis.pipeline(transaction=False) as pipe:
            for n in range(1, tickets + 1):
                pipe.exists(DeliveryStore.key(f"burst-{n}"))
            accepted = sum(pipe.execute())
            print(f"\r{accepted} webhooks accepted", end="", file=sys.stderr)
            if accepted == tickets:
                print(file=sys.stderr)
                return time.monotonic()
        time.sleep(0.25)
    raise RuntimeError(f"not all webhooks accepted within {timeout:.0f}s")


def wait_for_all_mails(standins: StandIns, redis: Redis, tickets: int, timeout: float) -> float:
    """Until the SendGrid stand-in accepted a mail for each ticket and the queue is idle; when that was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = standins.stats("sendgrid")
        mailed = sum(int(v) * int(k) for k, v in stats["tickets_by_messages"].items())
        print(f"\r{mailed} emails, {redis.llen('rq:queue:relance')} jobs queued", end="", file=sys.stderr)
        if mailed >= tickets and redis.llen("rq:queue:relance") == 0:
            return time.monotonic()
        time.sleep(0.5)
    raise RuntimeError(f"not all effects done within {timeout:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--jira-limit", type=float, default=50, help="stand-in: requests/s per endpoint and method")
    parser.add_argument("--sendgrid-limit", type=float, default=50, help="stand-in: sends/s")
    parser.add_argument("--jira-rate", type=float, default=0, help="RELANCE_JIRA_RATE (0: unpaced)")
    parser.add_argument("--sendgrid-rate", type=float, default=0, help="RELANCE_SENDGRID_RATE (0: unpaced)")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    limits = ["--jira-rate", str(args.jira_limit), "--jira-burst", str(int(args.jira_limit)),
              "--sendgrid-rate", str(args.sendgrid_limit), "--sendgrid-burst", str(int(args.sendgrid_limit))]
    processes = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", persist=False) as server, \
            StandIns("--latency-ms", str(args.latency_ms), "--issues", str(args.tickets), *limits) as standins:
        redis = Redis.from_url(server.url)
        env = standins.env(server.url, JIRA_WEBHOOK_TOKEN=TOKEN, RELANCE_JIRA_RATE=str(args.jira_rate),
                           RELANCE_SENDGRID_RATE=str(args.sendgrid_rate), LOG_FORMAT="text")
        template = Path(tmp) / "body.json"
        body_template(template)
        try:
            web, url = start_web(env)
            processes.append(web)
            for _ in range(args.workers):
                processes.append(subprocess.Popen([sys.executable, "-m", "relance", "worker"], cwd=ROOT, env=env,
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(3)       # the workers start (and reconcile once) before the burst
            print("posting the webhooks", file=sys.stderr)
            started = time.monotonic()
            wrk = subprocess.Popen(["wrk", "-t2", "-c32", f"-d{int(args.timeout)}s", "--timeout", "10s", "-s", "bench/burst.lua",
                                    f"{url}/webhooks/jira?token={TOKEN}"], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                   env={**os.environ, "BENCH_BODY": str(template), "BURST_TICKETS": str(args.tickets),
                                        "BURST_THREADS": "2", "BURST_PATH": f"/webhooks/jira?token={TOKEN}"})
            ingested = wait_until_accepted(redis, args.tickets, args.timeout) - started
            wrk.send_signal(signal.SIGINT)      # its threads stopped once their share was answered
            out = wrk.communicate(timeout=60)[0]
            answered, good, errors = map(int, re.search(r"burst: answered (\d+), 2xx (\d+), errors (\d+)",
                                                        out).groups())
            print(f"posted in {ingested:.1f}s: {out.strip().splitlines()[-1]}", file=sys.stderr)
            finished = wait_for_all_mails(standins, redis, args.tickets, args.timeout) - started
            jira, sendgrid = standins.stats("jira"), standins.stats("sendgrid")
            failed = redis.zcard("rq:failed:relance")
            cpu = {"web (gunicorn)": tree_cpu_seconds(web.pid),
                   "relance workers": sum(tree_cpu_seconds(p.pid) for p in processes[1:]),
                   "stand-ins (JIRA + SendGrid)": tree_cpu_seconds(standins.process.pid),
                   "Redis": tree_cpu_seconds(server.process.pid)}
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=60)

    by_count = sendgrid["tickets_by_messages"]
    print(f"## Bulk burst ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)\n")
    print(f"{args.tickets} webhooks (one per ticket, entering Waiting for feedback) posted by wrk -t2 -c32; "
          f"web: gunicorn, 2 workers; {args.workers} relance worker processes; stand-ins {args.latency_ms:.0f} ms "
          f"away, JIRA limited to {args.jira_limit:g} requests/s per endpoint, SendGrid to {args.sendgrid_limit:g} "
          f"sends/s; relance's pacing: JIRA {args.jira_rate or 'none'}, SendGrid {args.sendgrid_rate or 'none'}\n")
    print("| measure | value |\n| --- | --- |")
    print(f"| webhooks answered 2xx | {good} of {answered} ({answered - args.tickets} redeliveries); "
          f"{errors} redeliveries cut when wrk stopped |")
    print(f"| ingest (all {args.tickets} stored and queued) | {ingested:.1f} s ({args.tickets / ingested:.0f}/s) |")
    print(f"| all effects done after | **{finished:.0f} s** ({args.tickets / finished:.1f} events/s) |")
    print(f"| tickets by emails received | {json.dumps(by_count)} (lost: {args.tickets - sum(by_count.values())}, "
          f"duplicated: {sum(v for k, v in by_count.items() if int(k) > 1)}) |")
    print(f"| JIRA: answers | {json.dumps(jira['statuses'])}; 429s: {jira['rate_limited']}; sent while a 429's "
          f"wait was not over: {jira['ignored_retry_after']} |")
    print(f"| SendGrid: answers | {json.dumps(sendgrid['statuses'])}; 429s: {sendgrid['rate_limited']}; sent "
          f"while a reset was not over: {sendgrid['ignored_retry_after']} |")
    print(f"| RQ failed jobs | {failed} |")
    print(f"| CPU seconds used | {', '.join(f'{k} {v:.0f}' for k, v in cpu.items())} (of {2 * finished:.0f} on "
          f"2 cores; the rest: other processes on the machine) |")
    ok = good == answered >= args.tickets and by_count == {"1": args.tickets} and failed == 0 and finished <= 300
    print(f"\ngoal (all 2xx, 0 lost, 0 duplicated, done within 5 minutes): **{'met' if ok else 'NOT met'}**")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
