"""What the processing and burst benchmarks share: the stand-ins in a process of their own, the
environment of a worker talking to them, a process tree's memory, and job timings from RQ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import requests
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent


class StandIns:
    """``python -m tests.standins`` with the given options (JIRA issues PREFIX-1..N in Waiting for feedback)."""

    def __init__(self, *options: str):
        self.process = subprocess.Popen([sys.executable, "-m", "tests.standins", *options], cwd=ROOT,
                                        stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the stand-ins did not start (exit {self.process.wait()})")
        self.info = json.loads(line)

    def stats(self, which: str) -> dict:
        return requests.get(f"{self.info[which]}/_standin/stats", timeout=10).json()

    def env(self, redis_url: str, **extra: str) -> dict:
        """A worker's environment: JIRA and SendGrid are the stand-ins."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JIRA_", "SENDGRID_", "MAIL_", "RELANCE_"))}
        env.update(REDIS_URL=redis_url, JIRA_BASE_URL=self.info["jira"], JIRA_USER_EMAIL=self.info["jira_email"],
                   JIRA_API_TOKEN=self.info["jira_token"], SENDGRID_API_KEY=self.info["sendgrid_key"],
                   SENDGRID_API_HOST=self.info["sendgrid"], MAIL_FROM="Acme Support <support@acme.example>")
        env.update(extra)
        return env

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _processes() -> tuple[dict[int, list[int]], dict[int, tuple[float, float]]]:
    """{parent pid: [child pids]} and {pid: (resident MB, CPU seconds)} of every process (Linux /proc)."""
    children: dict[int, list[int]] = {}
    usage: dict[int, tuple[float, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            status = (entry / "status").read_text()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        usage[int(entry.name)] = (rss / 1024, (int(fields[11]) + int(fields[12])) / tick)    # utime + stime
    return children, usage


def _tree(pid: int, index: int) -> float:
    children, usage = _processes()
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += usage.get(p, (0.0, 0.0))[index]
        todo.extend(children.get(p, []))
    return total


def tree_rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` and its descendants, in MB."""
    return _tree(pid, 0)


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` and its live descendants so far, in seconds."""
    return _tree(pid, 1)


def job_span(redis: Redis, job_ids: list[str]) -> tuple[float, int]:
    """Seconds from the first of the jobs started to the last one ended, and how many finished."""
    pipe = redis.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hmget(f"rq:job:{job_id}", "started_at", "ended_at", "status")
    starts, ends, finished = [], [], 0
    for started, ended, status in pipe.execute():
        if started and ended:
            starts.append(datetime.fromisoformat(started.decode().replace("Z", "+00:00")))
            ends.append(datetime.fromisoformat(ended.decode().replace("Z", "+00:00")))
        finished += status == b"finished"
    return (max(ends) - min(starts)).total_seconds(), finished


def feedback_request(template: dict, key: str, timestamp_ms: int) -> bytes:
    """A webhook body: ticket ``key`` entered Waiting for feedback (from the docs' example)."""
    body = json.loads(json.dumps(template))
    body["issue"]["key"] = key
    body["issue"]["self"] = body["issue"]["self"].rsplit("/", 1)[0] + "/" + key
    body["timestamp"] = timestamp_ms
    return json.dumps(body).encode()
