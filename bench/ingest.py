"""Webhook ingest: relance's POST /webhooks/jira against a bare Flask endpoint answering 202. Prints Markdown.

    .venv/bin/python bench/ingest.py [--seconds 10] [--repeat 3] [--rate-seconds 10] [--rate N] [--workers 2]
                                     [--threads N] [--worker-class gevent]

Three apps run under gunicorn with the same settings (``--workers 2``, the Procfile's default;
sync workers, or ``--threads N`` gthread workers for all three; no access log), against a Redis this script starts, on the same machine as the
load generator: relance, a bare Flask endpoint answering 202, and that endpoint storing the
body first (one Redis SET, the least any endpoint keeping a delivery before its 202 can cost;
bench/baseline_app.py).

1. Saturation: wrk (Debian: ``apt-get install -y wrk``) with 2 threads and 32 connections posts
   a real 11 KB JIRA body with a fresh X-Atlassian-Webhook-Identifier per request
   (bench/deliveries.lua), so every request to relance is stored and queued, none is a duplicate.
   The apps take turns, ``--repeat`` times, so each ratio compares runs seconds apart.
2. Latency at a fixed rate, open loop: half the bare endpoint's median saturation rate (the goal),
   and half relance's own (what it sustains without queueing), or ``--rate``. Debian's
   wrk has no ``-R`` (that is wrk2), so this script sends them itself (one selector): request
   i at t0 + i/rate, each on a new connection (gunicorn's sync workers close each one), its
   latency counted from its scheduled instant, so a stall delays no request unmeasured (as wrk2
   corrects for coordinated omission). Every app, same rates, same run.
3. Cost per request: Redis commands from INFO commandstats over relance's saturation runs;
   commands sent by clients (scripts' own commands excluded), from MONITOR over 100 sequential
   deliveries: the round trips; CPU time of the web workers, Redis and wrk from /proc.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relance.embedded import EmbeddedRedis, free_port  # noqa: E402

WEB_WORKERS = 2
BODY = ROOT / "docs/examples/waiting-for-feedback.json"
APPS = {"bare Flask": "bench.baseline_app:app", "bare Flask + Redis SET": "bench.baseline_app:stored",
        "relance": "webhooks:create_app()"}
TICK = os.sysconf("SC_CLK_TCK")


def serve(app: str, env: dict, workers: int = WEB_WORKERS, threads: int = 1,
          worker_class: str | None = None) -> tuple[subprocess.Popen, str]:
    """``app`` under gunicorn (``workers`` sync workers, gthread workers of ``threads`` threads each
    when ``threads`` > 1, or workers of ``worker_class``) on a free port, once it answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers",
                             str(workers), "--threads", str(threads),
                             *(["--worker-class", worker_class] if worker_class else []), app], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            requests.post(f"{url}/webhooks/jira", data=b"{}", timeout=10)
            return proc, url
        except requests.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"{app} did not start")


def cpu_seconds(pids) -> float:
    """User + system CPU time of these processes so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def wrk(url: str, seconds: int, watch=()) -> dict:
    """One wrk run: rate, p50, p99, requests, errors, and CPU seconds of wrk and of ``watch`` processes."""
    before = cpu_seconds(watch)
    proc = subprocess.Popen(["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", "bench/deliveries.lua",
                             f"{url}/webhooks/jira"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"wrk failed: {out}")
    return {"rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": re.search(r"50%\s+([\d.]+\w+)", out).group(1),
            "p99": re.search(r"99%\s+([\d.]+\w+)", out).group(1),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "errors": int(re.search(r"non-2xx or socket errors: (\d+)", out).group(1)),
            "wrk_cpu": usage.ru_utime + usage.ru_stime, "watched_cpu": cpu_seconds(watch) - before}


def fixed_rate(url: str, rate: float, seconds: float, tag: str) -> dict:
    """Open-loop latency at ``rate`` requests/s for ``seconds``: request i is sent at t0 + i/rate on a
    connection opened then (as a webhook sender does; a sync worker waits on a connection opened
    early), and its latency, in milliseconds, runs from that scheduled instant to the server's close.
    Requests unanswered 10 s after the last one was due count as errors (an overloaded server)."""
    host, port = url.removeprefix("http://").split(":")
    address, body = (host, int(port)), BODY.read_bytes()
    selector = selectors.DefaultSelector()
    latencies, errors, n = [], 0, int(rate * seconds)
    start = time.monotonic() + 0.1
    sent = 0

    def begin(i: int, due: float) -> None:
        nonlocal errors
        sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if sock.connect_ex(address) not in (0, errno.EINPROGRESS):
            errors += 1
            sock.close()
            return
        request = (b"POST /webhooks/jira HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                   b"X-Atlassian-Webhook-Identifier: %s-%d\r\nContent-Length: %d\r\n\r\n%s"
                   % (tag.encode(), i, len(body), body))
        selector.register(sock, selectors.EVENT_WRITE, [due, memoryview(request), bytearray()])

    def step(key, mask) -> None:
        nonlocal errors
        sock, (due, pending, received) = key.fileobj, key.data
        try:
            if mask & selectors.EVENT_WRITE:
                key.data[1] = pending = pending[sock.send(pending):]
                if not pending:
                    selector.modify(sock, selectors.EVENT_READ, key.data)
                return
            chunk = sock.recv(65536)
            if chunk:
                received += chunk
                return
        except OSError:
            received.clear()
        selector.unregister(sock)
        sock.close()
        if received.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")):
            latencies.append(time.monotonic() - due)
        else:
            errors += 1

    give_up = start + seconds + 10                  # an overloaded server: what is unanswered by then is an error
    while (sent < n or selector.get_map()) and time.monotonic() < give_up:
        now = time.monotonic()
        while sent < n and start + sent / rate <= now:
            begin(sent, start + sent / rate)
            sent += 1
        wait = max(0.0, start + sent / rate - time.monotonic()) if sent < n else 1.0
        for key, mask in (selector.select(wait) if selector.get_map() else time.sleep(wait) or ()):
            step(key, mask)
    for key in list(selector.get_map().values()):
        selector.unregister(key.fileobj)
        key.fileobj.close()
        errors += 1
    errors += n - sent
    elapsed = time.monotonic() - start
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000  # noqa: E731
    return {"rate": rate, "achieved": len(latencies) / elapsed, "p50": q(0.50), "p99": q(0.99), "max": q(1.0),
            "errors": errors}


def client_commands(redis_url: str, url: str, deliveries: int = 100) -> dict:
    """Commands clients sent Redis (not those scripts ran) while ``deliveries`` fresh ones were posted."""
    redis, marker = Redis.from_url(redis_url), Redis.from_url(redis_url)
    marker.ping()
    body, counts = BODY.read_bytes(), {}
    with redis.monitor() as monitor:
        for i in range(deliveries):
            response = requests.post(f"{url}/webhooks/jira", data=body, timeout=10,
                                     headers={"X-Atlassian-Webhook-Identifier": f"monitored-{time.time_ns()}-{i}"})
            assert response.status_code == 202, response.text
        marker.echo("end-of-monitored-deliveries")
        while "end-of-monitored-deliveries" not in (command := monitor.next_command())["command"]:
            if command["client_type"] != "lua":
                name = command["command"].split()[0].upper()
                counts[name] = counts.get(name, 0) + 1
    return {name: n / deliveries for name, n in counts.items()}


def round_trips(redis_url: str, url: str, deliveries: int = 100) -> tuple[float, float]:
    """Reads and writes of client sockets Redis made per delivery while ``deliveries`` fresh ones were
    posted one after the other (INFO's own left out): 1 and 1 for one round trip each."""
    redis, body = Redis.from_url(redis_url), BODY.read_bytes()
    before = redis.info("stats")
    for i in range(deliveries):
        response = requests.post(f"{url}/webhooks/jira", data=body, timeout=10,
                                 headers={"X-Atlassian-Webhook-Identifier": f"round-trip-{time.time_ns()}-{i}"})
        assert response.status_code == 202, response.text
    after = redis.info("stats")
    return tuple((after[f"total_{x}_processed"] - before[f"total_{x}_processed"] - 1) / deliveries
                 for x in ("reads", "writes"))


def commandstats(redis: Redis) -> dict:
    return {k.removeprefix("cmdstat_"): (v["calls"], v["usec"]) for k, v in redis.info("commandstats").items()}


def _add(total: dict, more: dict) -> dict:
    total = dict(total)
    for k, (calls, usec) in more.items():
        c, u = total.get(k, (0, 0))
        total[k] = (c + calls, u + usec)
    return total


def measure(redis_url: str, redis_pid: int, seconds: int, repeat: int, rate_seconds: int,
            rate: float | None = None, workers: int = WEB_WORKERS, threads: int = 1,
            worker_class: str | None = None) -> dict:
    env = {**os.environ, "REDIS_URL": redis_url}
    redis = Redis.from_url(redis_url)
    servers = {name: serve(app, env, workers, threads, worker_class) for name, app in APPS.items()}
    runs, stats = {name: [] for name in APPS}, {}
    try:
        for name, (proc, url) in servers.items():
            wrk(url, 2)                                    # warm-up: imports, script load, caches
        redis.config_resetstat()
        for _ in range(repeat):
            for name, (proc, url) in servers.items():
                redis_before = cpu_seconds([redis_pid])
                run = wrk(url, seconds, [proc.pid, *children(proc.pid)])     # the web workers and their master
                run["redis_cpu"] = cpu_seconds([redis_pid]) - redis_before
                runs[name].append(run)
                if name == "relance":
                    stats = _add(stats, commandstats(redis))
                redis.config_resetstat()
        relance_requests = sum(r["requests"] for r in runs["relance"])
        median = {name: statistics.median(r["rate"] for r in rs) for name, rs in runs.items()}
        rates = {f"{rate:.0f} requests/s, set by --rate": rate} if rate else {
            "half the bare endpoint's median saturation rate (the goal's)": median["bare Flask"] / 2,
            "half relance's own median saturation rate": median["relance"] / 2}
        latency = {label: {name: fixed_rate(url, r, rate_seconds, f"fixed-{time.time_ns()}")
                           for name, (proc, url) in servers.items()} for label, r in rates.items()}
        monitored = client_commands(redis_url, servers["relance"][1])
        trips = round_trips(redis_url, servers["relance"][1])
        queued = redis.llen("rq:queue:relance")
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
    return {"runs": runs, "latency": latency, "monitored": monitored, "round_trips": trips, "queued": queued, "workers": workers,
            "threads": threads, "worker_class": worker_class,
            "relance_requests": relance_requests, "commandstats": stats}


def report(m: dict, seconds: int) -> str:
    runs, lines = m["runs"], []
    load = os.getloadavg()[0]
    lines.append(f"## Ingest ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
                 f"load average {load:.1f} at the end)\n")
    kind = (f"--worker-class {m['worker_class']}" if m["worker_class"]
            else f"--threads {m['threads']} (gthread)" if m["threads"] > 1 else "(sync)")
    lines.append(f"Saturation: wrk -t2 -c32 -d{seconds}s, 11 KB body, fresh delivery ids; gunicorn --workers "
                 f"{m['workers']} {kind}, the apps taking turns\n")
    names = list(runs)
    lines.append("| run | " + " | ".join(f"{n} req/s (p50, p99)" for n in names) + " | relance / bare |")
    lines.append("| --- " * (len(names) + 2) + "|")
    ratios, floor = [], []
    for i, row in enumerate(zip(*runs.values()), 1):
        by = dict(zip(names, row))
        ratios.append(by["relance"]["rate"] / by["bare Flask"]["rate"])
        floor.append(by["relance"]["rate"] / by["bare Flask + Redis SET"]["rate"])
        lines.append(f"| {i} | " + " | ".join(f"{r['rate']:.0f} ({r['p50']}, {r['p99']})" for r in row)
                     + f" | {ratios[-1]:.2f}x |")
    errors = sum(r["errors"] for rs in runs.values() for r in rs)
    lines.append(f"\nrelance / bare Flask: **{statistics.median(ratios):.2f}x** (median of {len(ratios)} runs; "
                 f"{min(ratios):.2f}-{max(ratios):.2f}); relance / bare Flask + Redis SET: "
                 f"{statistics.median(floor):.2f}x ({min(floor):.2f}-{max(floor):.2f}); "
                 f"non-2xx or socket errors: {errors}\n")
    for label, results in m["latency"].items():
        rate = next(iter(results.values()))["rate"]
        lines.append(f"Latency at a fixed rate, open loop, from each request's scheduled instant: {rate:.0f} "
                     f"requests/s, {label}\n")
        lines.append("| endpoint | achieved req/s | p50 | p99 | max | errors |\n| --- | --- | --- | --- | --- | --- |")
        for name, r in results.items():
            lines.append(f"| {name} | {r['achieved']:.0f} | {r['p50']:.2f} ms | {r['p99']:.2f} ms | "
                         f"{r['max']:.2f} ms | {r['errors']} |")
        lines.append("")
    n = m["relance_requests"]
    stats = {k: v for k, v in m["commandstats"].items() if k not in ("config|resetstat", "info")}
    calls = ", ".join(f"{k.upper()} {c / n:.2f}" for k, (c, _) in sorted(stats.items(), key=lambda kv: -kv[1][0]))
    usec = sum(u for k, (_, u) in stats.items() if k.upper() in m["monitored"]) / n    # scripts' included once
    sent = ", ".join(f"{k} {v:.2f}" for k, v in sorted(m["monitored"].items()))
    lines.append(f"Redis per accepted delivery: commands sent by the web (MONITOR, 100 deliveries): **{sent}**, "
                 f"in **{m['round_trips'][0]:.2f}** read and **{m['round_trips'][1]:.2f}** write of Redis (INFO stats, "
                 "100 more: one round trip); "
                 f"commands run (INFO commandstats, {n} deliveries, scripts' commands included): {calls}; "
                 f"{usec:.0f} µs of Redis time (commandstats). Queued jobs: {m['queued']} for {n} relance "
                 "requests counted by wrk (plus the fixed-rate and monitored ones, and any wrk cut off at its end).\n")
    lines.append("CPU time per request (µs, from /proc; median run):\n")
    lines.append("| endpoint | web workers | Redis | wrk |\n| --- | --- | --- | --- |")
    for name, rs in runs.items():
        per = lambda key: statistics.median(r[key] / r["requests"] * 1e6 for r in rs)  # noqa: E731
        lines.append(f"| {name} | {per('watched_cpu'):.0f} | {per('redis_cpu'):.0f} | {per('wrk_cpu'):.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="wrk runs of each app, taking turns")
    parser.add_argument("--rate-seconds", type=int, default=10, help="the fixed-rate run of each app")
    parser.add_argument("--rate", type=float, help="requests/s of the fixed-rate runs (default: half the bare "
                        "endpoint's median saturation rate, then half relance's)")
    parser.add_argument("--workers", type=int, default=WEB_WORKERS, help="gunicorn workers of every app")
    parser.add_argument("--threads", type=int, default=1, help="threads of each gunicorn worker, every app "
                        "(> 1: gunicorn's gthread worker)")
    parser.add_argument("--worker-class", help="gunicorn's worker class for every app, e.g. gevent (pip install "
                        "gevent first: not one of relance's dependencies). Its fixed-rate latencies count up to "
                        "the server's close, so a worker that keeps connections alive adds its keep-alive")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", persist=False) as redis:
        m = measure(redis.url, redis.process.pid, args.seconds, args.repeat, args.rate_seconds, args.rate,
                    args.workers, args.threads, args.worker_class)
    print(report(m, args.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
