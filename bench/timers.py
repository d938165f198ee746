"""Timer lateness: N timers due at the same second, one `relance worker`, dry-run JIRA.

    .venv/bin/python bench/timers.py [--timers 200] [--workers 1]

Each timer's rule adds a comment (a dry run, so cheap): lateness is the time from
a timer's due instant to its "timer fired" entry on the ticket's timeline. The
first timers measure the pump's precision; the last ones, a worker's throughput.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis import Redis  # noqa: E402

from relance.embedded import EmbeddedRedis  # noqa: E402
from workers.stores.audit import Audit  # noqa: E402
from workers.stores.timers import TimerStore  # noqa: E402

RULES = """statuses: {resolved: [Resolved], open: [Open]}
rules:
  - name: nudge
    when: {entered: resolved}
    after: 1d
    do: [{comment: "Still resolved"}]
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timers", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--memory", type=int, default=100_000, help="timers to arm for the memory figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", persist=False) as server:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(RULES)
        redis = Redis.from_url(server.url)
        store = TimerStore(redis)
        env = {**os.environ, "REDIS_URL": server.url, "RULES_FILE": str(rules), "OUTBOX_DIR": str(Path(tmp) / "o")}
        workers = [subprocess.Popen([sys.executable, "-m", "relance", "worker"], cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(args.workers)]
        try:
            time.sleep(2)        # let the workers start
            due = time.time() + 2
            started = time.perf_counter()
            with redis.pipeline(transaction=False) as pipe:
                for i in range(args.timers):
                    store.arm("nudge", f"T-{i}", due, "g1", pipe=pipe)
                    pipe.hset(f"relance:ticket:T-{i}", mapping={"status": "Resolved", "state": "resolved"})
                pipe.execute()
            arm_ms = (time.perf_counter() - started) * 1000
            audit = Audit(redis)
            late = []
            deadline = time.time() + 120
            for i in range(args.timers):
                while True:
                    fired = [e for e in audit.timeline(f"T-{i}") if e["kind"] == "timer fired"]
                    if fired or time.time() > deadline:
                        break
                    time.sleep(0.05)
                if fired:
                    late.append(int(fired[0]["id"].split("-")[0]) / 1000 - due)

        finally:
            for w in workers:
                w.terminate()
                w.wait()
        redis.flushall()
        before = redis.info("memory")["used_memory"]
        started = time.perf_counter()
        for start in range(0, args.memory, 10_000):
            with redis.pipeline(transaction=False) as pipe:
                for i in range(start, min(start + 10_000, args.memory)):
                    store.arm("auto-close", f"SUP-{i}", due + 86400 + i, f"{i:012x}", pipe=pipe)
                pipe.execute()
        arm_rate = args.memory / (time.perf_counter() - started)
        per_timer = (redis.info("memory")["used_memory"] - before) / args.memory
    late.sort()
    print(f"{args.timers} timers due at the same instant, {args.workers} worker(s); armed in {arm_ms:.0f} ms "
          f"(pipelined); all fired: {len(late) == args.timers}")
    print(f"lateness: first {late[0] * 1000:.0f} ms, median {statistics.median(late) * 1000:.0f} ms, "
          f"last {late[-1] * 1000:.0f} ms")
    print(f"{args.memory} pending timers: {per_timer:.0f} bytes of Redis memory each; "
          f"armed at {arm_rate:.0f}/s (pipelined, one MULTI-free round trip per 10,000)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
