"""Event processing: feedback-request events a second, one `relance worker` process, against its baselines.

    .venv/bin/python bench/processing.py [--latency-ms 100] [--events 480] [--threads 1,4,8,16,32]
                                         [--pool 4,8,16] [--repeat 3] [--plot docs/processing.png]

Each event is a delivery "ticket SUP-n entered Waiting for feedback" queued in Redis: the worker
parses it, decides under the ticket's lock, reads the ticket from JIRA, looks up the reporter in
JIRA, renders the email and sends it through SendGrid. JIRA and SendGrid are the stand-ins, in a
process of their own, answering every call --latency-ms late (no rate limit here: bench/burst.py).

Measured, each --repeat times, in this order within one run:
- relance worker with RELANCE_WORKER_THREADS=T, for each T of --threads (T=1: one job at a time,
  as before issue #10);
- RQ's WorkerPool (`rq worker-pool -n P`) of P relance workers with one thread each, for each P of
  --pool: the process-based model;
- the baselines without latency: RQ's default worker (it forks for each job) and its SimpleWorker,
  on no-op jobs, and relance with 1 and with the default thread count, at --latency-ms 0.
A rate is sustained throughput: jobs / (last job ended - first job started), from RQ's own job
records. Memory: the largest resident size of the worker process (and its children) while it ran.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.remotes import StandIns, feedback_request, job_span, tree_rss_mb  # noqa: E402
from relance.embedded import EmbeddedRedis  # noqa: E402
from workers import defaults  # noqa: E402

TEMPLATE = json.loads((ROOT / "docs/examples/waiting-for-feedback.json").read_text())


def noop():
    """A baseline job: does nothing."""


def queue_events(redis: Redis, events: int, run: str) -> list[str]:
    from workers.stores.deliveries import DeliveryStore
    from workers.stores.queue import enqueue_delivery, make_queue
    redis.flushall()
    store, queue = DeliveryStore(redis), make_queue(redis)
    now = int(time.time() * 1000)
    for i in range(1, events + 1):
        store.put(f"{run}-{i}", feedback_request(TEMPLATE, f"SUP-{i}", now))
        enqueue_delivery(queue, f"{run}-{i}")
    return [f"delivery-{run}-{i}" for i in range(1, events + 1)]


def queue_noops(redis: Redis, jobs: int) -> list[str]:
    from rq import Queue
    redis.flushall()
    queue = Queue("noop", connection=redis)
    with redis.pipeline() as pipe:
        for i in range(jobs):
            queue.enqueue("bench.processing.noop", job_id=f"noop-{i}", pipeline=pipe)
        pipe.execute()
    return [f"noop-{i}" for i in range(jobs)]


def run_process(command: list[str], env: dict) -> float:
    """Run ``command`` to its end; the largest resident size of its process tree, in MB."""
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0.0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.wait(0.2):
            peak = max(peak, tree_rss_mb(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        if process.wait(timeout=1800) != 0:
            raise RuntimeError(f"{command} exited {process.returncode}")
    finally:
        done.set()
        sampler.join()
    return peak


def measure(redis: Redis, job_ids: list[str], command: list[str], env: dict) -> dict:
    peak = run_process(command, env)
    span, finished = job_span(redis, job_ids)
    if finished != len(job_ids):
        raise RuntimeError(f"{command}: {finished} of {len(job_ids)} jobs finished")
    return {"rate": len(job_ids) / span, "rss_mb": peak}


def relance_worker(redis, redis_url, standins, events, threads, run) -> dict:
    ids = queue_events(redis, events, run)
    env = standins.env(redis_url, RELANCE_WORKER_THREADS=str(threads))
    return measure(redis, ids, [sys.executable, "-m", "relance", "worker", "--burst"], env)


def worker_pool(redis, redis_url, standins, events, processes, run) -> dict:
    ids = queue_events(redis, events, run)
    env = standins.env(redis_url, RELANCE_WORKER_THREADS="1")
    return measure(redis, ids, [sys.executable, "-m", "rq.cli", "worker-pool", "relance", "--burst", "-q",
                                "-n", str(processes), "-w", "workers.worker.RelanceWorker",
                                "-S", "rq.serializers.JSONSerializer", "-u", redis_url], env)


def rq_noop(redis, redis_url, jobs, worker_class) -> dict:
    ids = queue_noops(redis, jobs)
    return measure(redis, ids, [sys.executable, "-m", "rq.cli", "worker", "--burst", "-q", "-w", worker_class,
                                "--url", redis_url, "noop"], {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


def summary(samples: list[dict]) -> dict:
    rates = [s["rate"] for s in samples]
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "rss_mb": max(s["rss_mb"] for s in samples), "n": len(rates)}


def cell(s: dict) -> str:
    return f"{s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--events", type=int, default=480, help="events per measurement (fewer for slow ones)")
    parser.add_argument("--threads", default="1,4,8,16,32")
    parser.add_argument("--pool", default="4,8,16")
    parser.add_argument("--noop-jobs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--plot", help="write a PNG of events/s against threads or processes (needs matplotlib)")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",") if t]
    pools = [int(p) for p in args.pool.split(",") if p]

    def events_for(concurrency):     # about 15 s each at 100 ms: one-at-a-time runs need fewer events
        return min(args.events, max(60, 40 * concurrency))

    results: dict[tuple, list] = {}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", persist=False) as server:
        redis = Redis.from_url(server.url)
        n = 0
        with StandIns("--latency-ms", str(args.latency_ms), "--issues", str(args.events)) as slow, \
                StandIns("--issues", str(args.events)) as fast:
            for _ in range(args.repeat):
                for t in threads:
                    n += 1
                    results.setdefault(("threads", t), []).append(
                        relance_worker(redis, server.url, slow, events_for(t), t, f"r{n}"))
                    print(f"threads={t}: {results['threads', t][-1]}", file=sys.stderr)
                for p in pools:
                    n += 1
                    results.setdefault(("pool", p), []).append(
                        worker_pool(redis, server.url, slow, events_for(p), p, f"r{n}"))
                    print(f"pool={p}: {results['pool', p][-1]}", file=sys.stderr)
                results.setdefault(("rq", "Worker"), []).append(
                    rq_noop(redis, server.url, args.noop_jobs, "rq.worker.Worker"))
                results.setdefault(("rq", "SimpleWorker"), []).append(
                    rq_noop(redis, server.url, args.noop_jobs, "rq.worker.SimpleWorker"))
                for t in sorted({1, defaults.WORKER_THREADS}):
                    n += 1
                    results.setdefault(("fast", t), []).append(
                        relance_worker(redis, server.url, fast, args.events, t, f"r{n}"))
                print(f"rq and latency 0: {[(k, v[-1]) for k, v in results.items() if k[0] in ('rq', 'fast')]}",
                      file=sys.stderr)

    s = {key: summary(samples) for key, samples in results.items()}
    print(f"## Processing ({time.strftime('%Y-%m-%d')}, {__import__('os').cpu_count()} cores, "
          f"{args.repeat} runs each: median (min-max))\n")
    print(f"JIRA and SendGrid stand-ins answering {args.latency_ms:.0f} ms late; feedback-request events "
          "(read the ticket, look up the reporter, render, send)\n")
    print("| worker | processes | events/s | peak memory |\n| --- | --- | --- | --- |")
    for t in threads:
        print(f"| relance worker, {t} thread{'s' if t > 1 else ''} | 1 | {cell(s['threads', t])} | "
              f"{s['threads', t]['rss_mb']:.0f} MB |")
    for p in pools:
        print(f"| RQ WorkerPool of relance workers, 1 thread each | {p} (+1 pool) | {cell(s['pool', p])} | "
              f"{s['pool', p]['rss_mb']:.0f} MB |")
    best = max(threads, key=lambda t: s["threads", t]["median"])
    default = s.get(("threads", defaults.WORKER_THREADS)) or s["threads", best]
    one = s.get(("threads", 1))
    if one:
        print(f"\nOne worker process, {defaults.WORKER_THREADS} threads (the default): **{default['median']:.1f} events/s**"
              f" against {one['median']:.1f}/s one job at a time: {default['median'] / one['median']:.1f}x.")
    print("\nWithout latency (stand-ins answering at once), one process each:\n")
    print("| worker | events/s |\n| --- | --- |")
    print(f"| RQ default worker (forks per job), no-op jobs | {cell(s['rq', 'Worker'])} |")
    print(f"| RQ SimpleWorker, no-op jobs | {cell(s['rq', 'SimpleWorker'])} |")
    for t in sorted({1, defaults.WORKER_THREADS}):
        print(f"| relance worker, {t} thread{'s' if t > 1 else ''}, feedback-request events | {cell(s['fast', t])} |")
    ours = s["fast", defaults.WORKER_THREADS]["median"]
    print(f"\nrelance ({defaults.WORKER_THREADS} threads) / RQ default worker on no-op jobs: "
          f"**{ours / s['rq', 'Worker']['median']:.1f}x**; / RQ SimpleWorker: "
          f"{ours / s['rq', 'SimpleWorker']['median']:.2f}x")
    if args.plot:
        plot(args.plot, threads, pools, s, args.latency_ms)
    return 0


def plot(path: str, threads: list[int], pools: list[int], s: dict, latency_ms: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, xs, key in (("threads in one process", threads, "threads"),
                           ("RQ WorkerPool processes (1 thread each)", pools, "pool")):
        med = [s[key, x]["median"] for x in xs]
        err = [[m - s[key, x]["min"] for m, x in zip(med, xs)], [s[key, x]["max"] - m for m, x in zip(med, xs)]]
        ax.errorbar(xs, med, yerr=err, marker="o", capsize=3, label=label)
    ax.axhline(30, color="grey", linestyle=":", label="goal: 30 events/s")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(threads) | set(pools)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_ylim(bottom=0)
    ax.set_xlabel("jobs at once (threads, or processes)")
    ax.set_ylabel("feedback-request events / s")
    ax.set_title(f"One worker, JIRA and SendGrid {latency_ms:.0f} ms away (2 cores)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
