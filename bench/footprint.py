"""Redis memory per ticket, and for how long: what the retention costs.

    .venv/bin/python bench/footprint.py [--tickets 1000] [--body-kb 10]

Each ticket lives the default rules' common life in dry run (mail to a temporary
outbox): it enters Waiting for feedback, then Resolved (three deliveries of
``--body-kb`` each, as JIRA Server sends with descriptions and comments), and
its auto-close timer fires (a transition and an email). The jobs run in-process,
so RQ's own job records (kept an hour) are not counted. Memory is Redis's
``used_memory`` before and after, divided by the tickets; then the keys that
expire with the dedupe window (processed deliveries) are removed, as they are
DELIVERY_TTL later, and it is measured again.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis import Redis  # noqa: E402

from relance.embedded import EmbeddedRedis  # noqa: E402
from workers import context as process_context, defaults  # noqa: E402
from workers.context import Context  # noqa: E402
from workers.stores.deliveries import DeliveryStore  # noqa: E402
from workers.jobs import fire_timer, process_delivery  # noqa: E402
from workers.settings import PROJECT_ROOT, Settings  # noqa: E402
from workers.stores.timers import member  # noqa: E402


def body(key: str, to_status: str, from_status: str, ts_ms: int, pad: int) -> bytes:
    reporter = {"name": "jdoe", "emailAddress": "jdoe@customer.example", "displayName": "John Doe"}
    return json.dumps({
        "timestamp": ts_ms, "webhookEvent": "jira:issue_updated", "user": reporter,
        "issue": {"id": "10001", "key": key, "self": "https://jira.example.com/rest/api/2/issue/10001", "fields": {
            "summary": "The export fails", "status": {"name": to_status}, "project": {"key": "SUP"},
            "reporter": reporter, "priority": {"name": "Medium"}, "labels": [],
            "description": "x" * pad}},
        "changelog": {"items": [{"field": "status", "fromString": from_status, "toString": to_status}]},
    }).encode()


def used(redis: Redis) -> int:
    return int(redis.info("memory")["used_memory"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=1000)
    parser.add_argument("--body-kb", type=float, default=10)
    args = parser.parse_args()
    pad = int(args.body_kb * 1024) - 600
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", persist=False) as server:
        redis = Redis.from_url(server.url)
        settings = Settings(redis_url=server.url, rules_file=PROJECT_ROOT / "rules.yaml",
                            outbox_dir=Path(tmp) / "outbox")
        ctx = Context.build(settings, redis)
        process_context.use(ctx)
        deliveries = DeliveryStore(redis, keep=settings.retention)
        redis.set("warm", "up")
        before = used(redis)
        t0 = int(time.time() * 1000) - 6 * 86400_000          # six days ago: the auto-close is due
        started = time.perf_counter()
        for i in range(args.tickets):
            key = f"SUP-{i + 1}"
            for n, (frm, to) in enumerate((("Open", "Waiting for feedback"), ("Waiting for feedback", "Open"),
                                           ("Open", "Resolved"))):
                did = f"{key}-{n}"
                deliveries.put(did, body(key, to, frm, t0 + n * 1000, pad))
                process_delivery(did)
            timer = ctx.timers.get("auto-close", key)
            fire_timer(member("auto-close", key), timer.generation)
        elapsed = time.perf_counter() - started
        during = (used(redis) - before) / args.tickets
        short = [k for k in redis.scan_iter("relance:*") if 0 < redis.ttl(k) <= defaults.DELIVERY_TTL_SECONDS]
        for i in range(0, len(short), 500):
            redis.delete(*short[i:i + 500])
        after = (used(redis) - before) / args.tickets
        ticket_ttl = redis.ttl("relance:ticket:SUP-1")
        counts = {}
        for k in redis.scan_iter("relance:*"):
            kind = k.decode().split(":")[1]
            counts[kind] = counts.get(kind, 0) + 1
    print(f"{args.tickets} tickets, 3 deliveries of {args.body_kb:g} KB each + one timer firing, "
          f"in {elapsed:.1f} s")
    print(f"Redis per ticket, first {defaults.DELIVERY_TTL_SECONDS // 86400} days (deliveries kept for dedupe): "
          f"{during / 1024:.1f} KiB")
    print(f"Redis per ticket, after that until the retention ends: {after / 1024:.1f} KiB "
          f"(ticket memory and timeline expire {ticket_ttl / 86400:.0f} days after the last activity)")
    print("keys left per kind:", ", ".join(f"{k} {v / args.tickets:g}/ticket" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
