"""Timers at scale (issue #10, goal 4): Redis memory per pending timer, firing throughput of a burst, and
how late a lone timer fires behind a backlog of deliveries. Starts its own Redis and `relance worker`
processes; JIRA is a dry run (not configured), mail goes to a temporary outbox.

    .venv/bin/python bench/timers.py [--part all|memory|burst|backlog|sweep] [--timers 10000]
        [--workers 2] [--backlog 5000] [--lone 20] [--pending 1000000] [--runs 3] [--effects jira|email]
        [--baseline] [--job-size 50] [--plot docs/timers.png]

- memory: ``--pending`` timers armed (pipelined), Redis's ``used_memory`` before and after, divided by
  the timers; MEMORY USAGE of the index keys; one arm and one cancel timed (one round trip each); a
  pump's claim timed with that many pending.
- burst: ``--timers`` timers due at the same instant, ``--workers`` worker processes; each timer's rule
  moves the ticket to Closed and comments (``--effects jira``, dry run) or moves it and emails the
  reporter (``--effects email``, to the outbox). Lateness of each "timer fired" timeline entry from the
  due instant; "all done" when the last timer is released (after its last effect). Run ``--runs`` times.
- backlog: ``--backlog`` feedback-request deliveries queued (each an email to the outbox), then
  ``--lone`` timers due one a second while the workers drain them; each one's lateness.
- ``--baseline``: burst and backlog again with the scheme before #10, one RQ job per timer queued at
  the back of the queue (the workers' pumps are idled and the bench pumps the old way), same run.
- sweep: the burst at several sizes (and the baseline's, up to 5,000), for the growth curve;
  ``--plot`` draws it with the memory curve (needs the ``bench`` extra: matplotlib).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis import Redis  # noqa: E402
from rq import Worker  # noqa: E402

from bench.run import queue_feedback_requests  # noqa: E402
from relance.embedded import EmbeddedRedis  # noqa: E402
from workers.core.lifecycle import TicketMemory  # noqa: E402
from workers.stores.queue import enqueue_timer, make_queue  # noqa: E402
from workers.stores.tickets import TicketStore  # noqa: E402
from workers.stores.timers import GENERATION_KEY, PENDING_KEY, TimerStore, job_id  # noqa: E402

RULES = """statuses:
  open: [Open, In Progress]
  waiting_for_feedback: [Waiting for feedback]
  resolved: [Resolved]
  closed: [Closed]
rules:
  - name: feedback-request
    when: {entered: waiting_for_feedback}
    do:
      - email: {to: reporter, template: feedback_request}
  - name: auto-close
    when: {entered: resolved}
    after: 5d
    do:
      - transition: Closed
"""
EFFECTS = {
    "jira": '      - comment: "Closed after five days without news."\n',
    "email": "      - email: {to: reporter, template: auto_closed}\n",
}
EFFECT_NAMES = {"jira": "a transition and a comment (dry run)", "email": "a transition (dry run) and an email to the outbox"}


class Bench:
    """One Redis, a rules file and an outbox; worker processes started and stopped per measurement."""

    def __init__(self, tmp: Path, url: str, effects: str, job_size: int):
        self.tmp, self.url = tmp, url
        self.redis = Redis.from_url(url)
        self.rules = tmp / "rules.yaml"
        self.rules.write_text(RULES + EFFECTS[effects])
        self.job_size = job_size

    def env(self, baseline: bool) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JIRA_", "SENDGRID_", "RELANCE_"))}
        env.update(REDIS_URL=self.url, RULES_FILE=str(self.rules), OUTBOX_DIR=str(self.tmp / "outbox"),
                   RELANCE_TIMER_JOB_SIZE=str(self.job_size))
        if baseline:
            env["RELANCE_TIMER_POLL"] = "3600"      # the workers' pumps idle: the bench pumps the old way
        return env

    def start_workers(self, count: int, baseline: bool) -> list[subprocess.Popen]:
        workers = [subprocess.Popen([sys.executable, "-m", "relance", "worker"], cwd=ROOT, env=self.env(baseline),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)]
        deadline = time.time() + 60
        while Worker.count(connection=self.redis) < count:      # a child's start has no event to await
            assert time.time() < deadline, "workers did not start"
            assert all(w.poll() is None for w in workers), "a worker exited"
            time.sleep(0.05)
        return workers

    def cpu(self, workers: list[subprocess.Popen]) -> tuple[float, float]:
        """CPU seconds used so far by the worker processes, and by Redis."""
        tick = os.sysconf("SC_CLK_TCK")
        used = 0.0
        for w in workers:
            fields = Path(f"/proc/{w.pid}/stat").read_text().rsplit(")", 1)[1].split()
            used += (int(fields[11]) + int(fields[12])) / tick
        info = self.redis.info("cpu")
        return used, info["used_cpu_user"] + info["used_cpu_sys"]

    @staticmethod
    def stop(workers: list[subprocess.Popen]) -> None:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait()

    def remember_tickets(self, keys: list[str]) -> None:
        """What a Resolved delivery would have left: the ticket's memory and snapshot (a reporter to mail)."""
        tickets = TicketStore(self.redis)
        since = int(time.time() * 1000) - 5 * 86400_000
        for start in range(0, len(keys), 5000):
            with self.redis.pipeline(transaction=False) as pipe:
                for key in keys[start:start + 5000]:
                    snap = {"key": key, "id": key.split("-")[1], "status": "Resolved", "summary": f"Export {key} fails",
                            "priority": "Medium", "labels": [], "project": "SUP", "issue_type": "Bug",
                            "reporter": {"name": "jdoe", "display_name": "John Doe", "email": "jdoe@customer.example"},
                            "assignee": None, "site_url": "https://jira.example.com"}
                    tickets.save(key, TicketMemory(status="Resolved", state="resolved", ts_ms=since, since_ms=since),
                                 snap, pipe=pipe)
                pipe.execute()

    def arm(self, keys: list[str], due: float | list[float]) -> None:
        store = TimerStore(self.redis)
        dues = due if isinstance(due, list) else [due] * len(keys)
        for start in range(0, len(keys), 10_000):
            with self.redis.pipeline(transaction=False) as pipe:
                for key, when in zip(keys[start:start + 10_000], dues[start:start + 10_000]):
                    store.arm("auto-close", key, when, "g1", pipe=pipe)
                pipe.execute()

    def fired_and_done(self, keys: list[str]) -> tuple[list[float], list[float]]:
        """For each ticket whose timer fired: when (the "timer fired" entry) and when its last effect was
        recorded, epoch seconds from the entries' ids (Redis's clock, this machine's)."""
        fired, done = [], []
        for start in range(0, len(keys), 2000):
            with self.redis.pipeline(transaction=False) as pipe:
                for key in keys[start:start + 2000]:
                    pipe.xrange(f"relance:audit:{key}")
                for entries in pipe.execute():
                    kinds = [(int(i.split(b"-")[0]) / 1000, f[b"kind"]) for i, f in entries]
                    when = [t for t, kind in kinds if kind == b"timer fired"]
                    if when:
                        fired.append(when[0])
                        done.append(max(t for t, kind in kinds if kind.startswith(b"effect")))
        return fired, done


class LegacyPump(threading.Thread):
    """The scheme before #10, for the baseline: each due timer its own fire_timer job, at the back."""

    def __init__(self, redis: Redis):
        super().__init__(daemon=True)
        self.store, self.queue = TimerStore(redis), make_queue(redis)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            claimed = self.store.claim(time.time(), 500)
            for m, g, due in claimed:
                enqueue_timer(self.queue, job_id(m, g), m, g, due)
            if len(claimed) < 500:
                self.stopping.wait(0.2)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    """median [min-max] of several runs."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


# -- parts --------------------------------------------------------------------------

def burst(bench: Bench, timers: int, workers: int, baseline: bool = False, timeout: float = 600) -> dict:
    """``timers`` timers due at the same instant; when each fired and when all were done."""
    bench.redis.flushall()
    keys = [f"SUP-{i}" for i in range(timers)]
    bench.remember_tickets(keys)
    procs = bench.start_workers(workers, baseline)
    pump = LegacyPump(bench.redis) if baseline else None
    try:
        if pump:
            pump.start()
        due = time.time() + 1.5
        bench.arm(keys, due)
        cpu_before = bench.cpu(procs)
        deadline = due + timeout
        while bench.redis.zcard(PENDING_KEY) and time.time() < deadline:   # released after its last effect
            time.sleep(0.05)
        cpu_after = bench.cpu(procs)
    finally:
        if pump:
            pump.stopping.set()
        bench.stop(procs)
    fired, done = bench.fired_and_done(keys)
    late = [t - due for t in fired]
    end = max(done) - due if done else float("nan")
    return {"timers": timers, "fired": len(fired), "all": len(fired) == timers, "done_in": end,
            "rate": len(fired) / end if done else 0.0, "first": min(late), "median": statistics.median(late),
            "p99": percentile(late, 99), "last": max(late),
            "worker_cpu": (cpu_after[0] - cpu_before[0]) / timers * 1000,
            "redis_cpu": (cpu_after[1] - cpu_before[1]) / timers * 1000}


def backlog(bench: Bench, deliveries: int, lone: int, workers: int, baseline: bool = False) -> dict:
    """``deliveries`` queued, then ``lone`` timers due one a second: each one's lateness, and the backlog
    still queued when it was due."""
    bench.redis.flushall()
    queue_feedback_requests(bench.redis, deliveries)
    queue = make_queue(bench.redis)
    keys = [f"LONE-{i}" for i in range(lone)]
    bench.remember_tickets(keys)
    procs = bench.start_workers(workers, baseline)
    pump = LegacyPump(bench.redis) if baseline else None
    queued_at_due = []
    try:
        if pump:
            pump.start()
        start = time.time() + 1
        dues = [start + i for i in range(lone)]
        bench.arm(keys, dues)
        deadline = dues[-1] + 600
        pending = list(dues)
        while bench.redis.zcard(PENDING_KEY) and time.time() < deadline:
            while pending and time.time() >= pending[0]:
                queued_at_due.append(bench.redis.llen(queue.key))
                pending.pop(0)
            time.sleep(0.02)
    finally:
        if pump:
            pump.stopping.set()
        bench.stop(procs)
    fired, _ = bench.fired_and_done(keys)
    late = sorted(f - d for f, d in zip(fired, dues))
    return {"lone": lone, "fired": len(fired), "median": statistics.median(late), "p99": percentile(late, 99),
            "max": max(late), "queued_min": min(queued_at_due or [0]), "queued_max": max(queued_at_due or [0])}


def memory(bench: Bench, pending: int) -> dict:
    """Bytes per pending timer at growing counts, arm/cancel cost, and a claim's cost with that many."""
    redis, store = bench.redis, TimerStore(bench.redis)
    redis.flushall()
    before = redis.info("memory")["used_memory"]
    steps, armed, started = [], 0, time.perf_counter()
    due = time.time() + 86400
    for size in sorted({s for s in (10_000, 100_000, pending) if s <= pending}):
        while armed < size:
            with redis.pipeline(transaction=False) as pipe:
                for i in range(armed, min(armed + 10_000, size)):
                    store.arm("auto-close", f"SUP-{i}", due + i, f"{i:012x}", pipe=pipe)
                pipe.execute()
            armed = min(armed + 10_000, size)
        per = (redis.info("memory")["used_memory"] - before) / size
        claim = []
        for _ in range(50):
            t = time.perf_counter()
            store.claim(time.time())          # nothing due: what every poll of every pump costs
            claim.append(time.perf_counter() - t)
        steps.append({"pending": size, "bytes": per, "claim_ms": statistics.median(claim) * 1000})
    arm_rate = armed / (time.perf_counter() - started)
    usage = {k: redis.memory_usage(k, samples=0) for k in (PENDING_KEY, GENERATION_KEY)}
    # One arm and one cancel, each timed: each is one MULTI/EXEC pipeline, i.e. one round trip.
    arm, cancel = [], []
    for i in range(500):
        t = time.perf_counter()
        store.arm("reminder", f"SUP-{i}", due, "abcdef012345")
        arm.append(time.perf_counter() - t)
        t = time.perf_counter()
        store.cancel("reminder", f"SUP-{i}")
        cancel.append(time.perf_counter() - t)
    # A pump's claim of 500 due timers among them.
    for i in range(500):
        store.arm("auto-close", f"DUE-{i}", 1000.0 + i, "g1")
    t = time.perf_counter()
    claimed = store.claim(time.time(), 500)
    claim_500 = time.perf_counter() - t
    assert len(claimed) == 500
    return {"pending": pending, "steps": steps, "bytes": steps[-1]["bytes"],
            "usage": sum(usage.values()) / pending, "arm_rate": arm_rate,
            "arm_ms": statistics.median(arm) * 1000, "cancel_ms": statistics.median(cancel) * 1000,
            "claim_500_ms": claim_500 * 1000}


# -- report ----------------------------------------------------------------------------

def report_memory(m: dict) -> None:
    print(f"### {m['pending']:,} pending timers\n")
    print("| figure | measured | goal |\n| --- | --- | --- |")
    print(f"| Redis memory per pending timer (`used_memory` delta) | **{m['bytes']:.0f} bytes** "
          f"(MEMORY USAGE of the two keys: {m['usage']:.0f}) | <= 250 bytes |")
    print(f"| arm one timer | 1 round trip (MULTI: ZADD, HSET, ZREM), median {m['arm_ms']:.2f} ms | 1 round trip |")
    print(f"| cancel one timer | 1 round trip (MULTI: ZREM, HDEL, ZREM), median {m['cancel_ms']:.2f} ms "
          "| 1 round trip |")
    print(f"| arming, pipelined | {m['arm_rate']:,.0f} timers/s | |")
    print(f"| a pump's claim of 500 due timers among them (one Lua call) | {m['claim_500_ms']:.1f} ms | |\n")
    print("| pending timers | bytes each | a claim with nothing due (every poll) |\n| --- | --- | --- |")
    for s in m["steps"]:
        print(f"| {s['pending']:,} | {s['bytes']:.0f} | {s['claim_ms']:.2f} ms |")
    print()


def report_burst(runs: list[dict], base: list[dict], timers: int, workers: int, effects: str, job_size: int) -> None:
    print(f"### {timers:,} timers due at the same instant, {workers} workers, {job_size} timers per job; "
          f"each {EFFECT_NAMES[effects]}; {len(runs)} run(s): median [min-max]\n")
    print("| figure | measured | goal | baseline: one RQ job per timer at the back, same run |")
    print("| --- | --- | --- | --- |")
    b = (lambda key, fmt="{:.1f}": spread([r[key] for r in base], fmt)) if base else (lambda *a, **k: "-")
    r = lambda key, fmt="{:.1f}": spread([x[key] for x in runs], fmt)   # noqa: E731
    print(f"| all fired | {all(x['all'] for x in runs)} | yes | {all(x['all'] for x in base) if base else '-'} |")
    print(f"| all done (last effect) after the due instant, s | **{r('done_in')}** | <= {timers / 1000:.0f} s "
          f"| {b('done_in')} |")
    print(f"| firings/s | **{r('rate', '{:.0f}')}** | >= 1000 | {b('rate', '{:.0f}')} |")
    print(f"| CPU per firing: workers, ms | {r('worker_cpu', '{:.2f}')} | | {b('worker_cpu', '{:.2f}')} |")
    print(f"| CPU per firing: Redis, ms | {r('redis_cpu', '{:.2f}')} | | {b('redis_cpu', '{:.2f}')} |")
    for key in ("first", "median", "p99", "last"):
        print(f"| lateness of \"timer fired\": {key}, s | {r(key, '{:.2f}')} | | {b(key, '{:.2f}')} |")
    print()


def report_backlog(runs: list[dict], base: list[dict], deliveries: int, workers: int) -> None:
    print(f"### A lone timer due each second while {deliveries:,} deliveries are queued, {workers} workers\n")
    print("| figure | measured | goal | baseline: timer job at the back, same run |\n| --- | --- | --- | --- |")
    for key, label in (("median", "lateness median, s"), ("p99", "lateness p99, s"), ("max", "lateness max, s")):
        goal = "<= 1 s" if key == "p99" else ""
        print(f"| {label} | **{spread([r[key] for r in runs], '{:.2f}')}** | {goal} "
              f"| {spread([r[key] for r in base], '{:.2f}') if base else '-'} |")
    q = [r["queued_min"] for r in runs] + [r["queued_max"] for r in runs]
    print(f"| deliveries still queued when each timer was due | {min(q):,} to {max(q):,} | | |\n")


def plot(path: Path, sweep: list[dict], base: list[dict], mem: dict | None, workers: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2 if mem else 1, figsize=(11 if mem else 6, 4))
    ax = axes[0] if mem else axes
    ax.plot([r["timers"] for r in sweep], [r["done_in"] for r in sweep], "o-", label="firing jobs at the front")
    if base:
        ax.plot([r["timers"] for r in base], [r["done_in"] for r in base], "s--", label="one RQ job per timer")
    ax.plot([r["timers"] for r in sweep], [r["timers"] / 1000 for r in sweep], ":", color="grey",
            label="goal: 1,000 firings/s")
    ax.set_xlabel("timers due at the same instant")
    ax.set_ylabel("seconds until all done")
    ax.set_title(f"Burst, {workers} workers, dry run")
    ax.legend()
    if mem:
        ax = axes[1]
        ax.semilogx([s["pending"] for s in mem["steps"]], [s["bytes"] for s in mem["steps"]], "o-")
        ax.axhline(250, linestyle=":", color="grey", label="goal: 250 bytes")
        ax.set_ylim(0, 300)
        ax.set_xlabel("pending timers")
        ax.set_ylabel("Redis bytes per pending timer")
        ax.set_title("Memory")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "memory", "burst", "backlog", "sweep"), default="all")
    parser.add_argument("--timers", type=int, default=10_000, help="burst: timers due at the same instant")
    parser.add_argument("--workers", type=int, default=2, help="`relance worker` processes")
    parser.add_argument("--backlog", type=int, default=5_000, help="deliveries queued before the lone timers")
    parser.add_argument("--lone", type=int, default=20, help="lone timers, due one a second")
    parser.add_argument("--pending", type=int, default=1_000_000, help="memory: pending timers")
    parser.add_argument("--runs", type=int, default=3, help="repeat burst and backlog")
    parser.add_argument("--effects", choices=tuple(EFFECTS), default="jira")
    parser.add_argument("--job-size", type=int, default=50, help="RELANCE_TIMER_JOB_SIZE")
    parser.add_argument("--baseline", action="store_true", help="the one-job-per-timer scheme too, same run")
    parser.add_argument("--plot", type=Path, help="with --part sweep: draw the curves here (PNG)")
    args = parser.parse_args()
    print(f"## Timers: `bench/timers.py {' '.join(sys.argv[1:])}` ({time.strftime('%Y-%m-%d')}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start)\n")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", persist=False) as server:
        bench = Bench(Path(tmp), server.url, args.effects, args.job_size)
        if args.part in ("all", "burst"):
            runs = [burst(bench, args.timers, args.workers) for _ in range(args.runs)]
            base = [burst(bench, args.timers, args.workers, baseline=True) for _ in range(args.runs)] \
                if args.baseline else []
            report_burst(runs, base, args.timers, args.workers, args.effects, args.job_size)
        if args.part in ("all", "backlog"):
            runs = [backlog(bench, args.backlog, args.lone, args.workers) for _ in range(args.runs)]
            base = [backlog(bench, args.backlog, args.lone, args.workers, baseline=True)] if args.baseline else []
            report_backlog(runs, base, args.backlog, args.workers)
        mem = None
        if args.part in ("all", "memory", "sweep"):
            mem = memory(bench, args.pending)
            report_memory(mem)
        if args.part == "sweep":
            sizes = [1000, 2500, 5000, 10_000, 20_000]
            sweep = [burst(bench, n, args.workers) for n in sizes]
            base = [burst(bench, n, args.workers, baseline=True) for n in sizes if n <= 5000] if args.baseline else []
            print("| timers due at once | all done in, s | firings/s | baseline: done in, s | firings/s |")
            print("| --- | --- | --- | --- | --- |")
            for i, r in enumerate(sweep):
                b = base[i] if i < len(base) else None
                then = f"{b['done_in']:.1f} | {b['rate']:.0f}" if b else "- | -"
                print(f"| {r['timers']:,} | {r['done_in']:.1f} | {r['rate']:.0f} | {then} |")
            print()
            if args.plot:
                plot(args.plot, sweep, base, mem, args.workers)
                print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
