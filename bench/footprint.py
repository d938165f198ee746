"""Footprint: start-up time and resident memory of web and worker; Redis memory per ticket, and after 30 days.

    .venv/bin/python bench/footprint.py [--parts startup,load,validate] [--repeat 5] [--tickets 300]

Starts its own Redis (relance.embedded). Three parts, each alone with ``--parts``:

startup   The Procfile's ``web`` and ``worker`` spawned as a platform does (the Procfile's command,
          its own session), ``--repeat`` times, interleaved with their baselines: a bare Flask app
          (bench/baseline_app.py) under gunicorn with the same bind, workers and access log, and
          ``rq worker`` (RQ's default worker, then its SimpleWorker) with no relance import. Time
          from spawn until the web answers GET /healthz, and until the worker is registered with
          RQ (its key in ``rq:workers``) and idle; then resident memory (VmRSS; PSS, which shares
          forked pages out; USS, a process's own pages) of each process: gunicorn's master and
          its workers, the worker and RQ's scheduler child.
load      ``--tickets`` tickets live the default rules' common life through the real web and
          worker (dry run, mail to an outbox): created, a support comment, Waiting for feedback,
          the customer's comment (relance moves the ticket to Open: JIRA's webhook of that
          transition follows), Resolved, auto-closed by its timer (and JIRA's webhook of it):
          seven JIRA Server deliveries (docs/examples' body with the ticket's comments: 13 KiB
          on average; ``--body-kb`` pads them to more) and one timer firing per ticket.
          The auto-close delay is shortened to ``--auto-close-seconds`` so it fires during the
          run; nothing else differs from rules.yaml. Then: resident memory of web and worker
          beside the baselines after as many requests / no-op jobs; and Redis memory by key
          family (MEMORY USAGE ... SAMPLES 0 of every key), per delivery and per ticket, and the
          steady state after ``--days`` days at ``--events-per-day`` deliveries a day, given what
          bounds each family.
validate  The same life on a scaled clock (one day = ``--day-seconds`` seconds: the retention,
          the delivery TTL and the auto-close scaled alike), tickets started at a steady rate
          for ``--days`` scaled days, so processed deliveries really expire; the live memory by
          family at the end, measured, beside what the model of ``load`` predicts for that run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relance.embedded import EmbeddedRedis, free_port  # noqa: E402
from webhooks.signature import sign  # noqa: E402
from workers import defaults  # noqa: E402
from workers.stores.audit import Audit  # noqa: E402
from workers.stores.deliveries import DeliveryStore  # noqa: E402
from workers.stores.tickets import TicketStore  # noqa: E402
from workers.stores.timers import TimerStore  # noqa: E402

SECRET = "footprint-webhook-secret"
WEB_CONCURRENCY = 2
BASE_ACCESS_LOG = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(f)s" "%(a)s"'    # gunicorn.conf.py's
DAY = 86400
BIN = Path(sys.executable).parent


# --- processes -------------------------------------------------------------------------------------

def procfile_command(name: str, env: dict) -> list[str]:
    """The Procfile's command for ``name``, its ``${VAR:-default}`` expanded from ``env``; ``python``
    and ``gunicorn`` are this interpreter's (the project's venv), as ``relance up`` runs them."""
    line = next(line.split(":", 1)[1] for line in (ROOT / "Procfile").read_text().splitlines()
                if line.startswith(f"{name}:"))
    line = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1)) or m.group(2), line)
    args = shlex.split(line)
    if args[0] in ("python", "gunicorn"):
        args[0] = sys.executable if args[0] == "python" else str(BIN / "gunicorn")
    return args


def spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """Start ``args`` in a session of its own (as a platform starts a dyno), output to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def memory_kib(pid: int) -> tuple[int, int, int]:
    """(VmRSS, PSS, USS) of one process, KiB. PSS shares each page among the processes that map it;
    USS counts the pages only this process maps: what it frees when it exits."""
    rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    pss = int(re.search(r"^Pss:\s+(\d+)", rollup, re.M).group(1))
    uss = sum(int(x) for x in re.findall(r"^Private_(?:Clean|Dirty):\s+(\d+)", rollup, re.M))
    return rss, pss, uss


@dataclass
class Memory:
    """Resident memory of a process and its children, KiB: each (name, VmRSS, PSS, USS), and the sums."""
    each: list[tuple[str, int, int, int]]

    @classmethod
    def of(cls, pid: int, names=("master", "worker")) -> "Memory":
        rows = [(names[0], *memory_kib(pid))]
        rows += [(names[1], *memory_kib(c)) for c in children(pid)]
        return cls(rows)

    @property
    def rss(self) -> int:
        return sum(m[1] for m in self.each)

    @property
    def pss(self) -> int:
        return sum(m[2] for m in self.each)

    def of_each(self) -> str:
        """``master 62.1 (USS 40.2) + worker ...`` MiB."""
        return " + ".join(f"{name} {rss / 1024:.1f} (USS {uss / 1024:.1f})" for name, rss, _, uss in self.each)


def wait_web(url: str, proc: subprocess.Popen, started: float, timeout: float = 60) -> float:
    """Seconds from ``started`` until ``url``/healthz answers (any HTTP answer: the bare app has no route)."""
    while True:
        try:
            requests.get(f"{url}/healthz", timeout=1)
            return time.perf_counter() - started
        except (requests.ConnectionError, requests.Timeout):
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"web exited with {proc.returncode}")
        if time.perf_counter() - started > timeout:
            raise RuntimeError("web did not answer")
        time.sleep(0.005)       # a child's port has no event to await


def wait_worker(redis: Redis, proc: subprocess.Popen, started: float, timeout: float = 60) -> float:
    """Seconds from ``started`` until the worker of pid ``proc.pid`` is in ``rq:workers`` and idle."""
    pid = str(proc.pid).encode()
    while True:
        for key in redis.smembers("rq:workers"):
            found, state = redis.hmget(key, "pid", "state")
            if found == pid and state == b"idle":
                return time.perf_counter() - started
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}")
        if time.perf_counter() - started > timeout:
            raise RuntimeError("worker did not register")
        time.sleep(0.005)


def settle(url: str) -> None:
    """Let every gunicorn worker answer once (concurrent requests reach each sync worker)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: requests.get(f"{url}/healthz", timeout=5), range(32)))


@dataclass
class Service:
    """Spawns the web and worker processes of the benchmark, relance's or the baselines'."""
    redis_url: str
    tmp: Path
    rules_file: Path | None = None
    extra_env: dict = field(default_factory=dict)

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JIRA_", "SENDGRID_", "MAIL_", "RELANCE_"))}
        env.update(REDIS_URL=self.redis_url, JIRA_WEBHOOK_SECRET=SECRET, OUTBOX_DIR=str(self.tmp / "outbox"),
                   WEB_CONCURRENCY=str(WEB_CONCURRENCY), PATH=os.pathsep.join([str(BIN), os.environ["PATH"]]),
                   **self.extra_env)
        if self.rules_file:
            env["RULES_FILE"] = str(self.rules_file)
        return env

    def web(self, baseline: bool = False) -> tuple[subprocess.Popen, str, float]:
        """Start the web (the Procfile's, or the bare Flask app with the same bind, workers and access
        log, but not gunicorn.conf.py's start-up check, which imports relance); wait until it answers."""
        env = self.env()
        env["PORT"] = str(free_port())
        if baseline:
            # gunicorn reads ./gunicorn.conf.py unless given another: give it the same settings without the hook.
            conf = self.tmp / "baseline.gunicorn.conf.py"
            conf.write_text(f"access_log_format = {BASE_ACCESS_LOG!r}\n")
            args = [str(BIN / "gunicorn"), "-c", str(conf), "--bind", f"0.0.0.0:{env['PORT']}", "--workers",
                    str(WEB_CONCURRENCY), "--access-logfile", "-", "bench.baseline_app:app"]
        else:
            args = procfile_command("web", env)
        started = time.perf_counter()
        proc = spawn(args, env, self.tmp / ("baseline-web.log" if baseline else "web.log"))
        url = f"http://127.0.0.1:{env['PORT']}"
        return proc, url, wait_web(url, proc, started)

    def worker(self, baseline: str | None = None) -> tuple[subprocess.Popen, float]:
        """Start the Procfile's worker, or ``rq worker -w <baseline>`` on queue ``noop`` (with RQ's
        scheduler, as relance's worker runs it); wait until it is registered and idle."""
        env = self.env()
        if baseline:
            args = [str(BIN / "rq"), "worker", "--url", self.redis_url, "--with-scheduler", "-w", baseline, "noop"]
        else:
            args = procfile_command("worker", env)
        started = time.perf_counter()
        proc = spawn(args, env, self.tmp / ("baseline-worker.log" if baseline else "worker.log"))
        return proc, wait_worker(Redis.from_url(self.redis_url), proc, started)


# --- part 1: start-up and idle memory ---------------------------------------------------------------

BASE_WORKERS = {"rq worker (default, forks per job)": "rq.worker.Worker",
                "rq worker -w SimpleWorker": "rq.worker.SimpleWorker"}


def spread(values: list[float], unit: str = "", scale: float = 1.0, fmt: str = ".2f") -> str:
    """``median [min-max]`` of ``values``."""
    v = [x * scale for x in values]
    if len(v) == 1:
        return f"{v[0]:{fmt}}{unit}"
    return f"{statistics.median(v):{fmt}}{unit} [{min(v):{fmt}}-{max(v):{fmt}}]"


def part_startup(redis_url: str, tmp: Path, repeat: int) -> dict:
    svc = Service(redis_url, tmp)
    times: dict[str, list[float]] = {}
    memory: dict[str, list[Memory]] = {}

    def note(name, seconds, mem):
        times.setdefault(name, []).append(seconds)
        memory.setdefault(name, []).append(mem)

    for _ in range(repeat):
        for baseline in (False, True):
            proc, url, seconds = svc.web(baseline)
            try:
                settle(url)
                time.sleep(0.5)
                note("bare Flask, gunicorn" if baseline else "relance web", seconds, Memory.of(proc.pid))
            finally:
                stop(proc)
        for name, cls in [("relance worker", None), *BASE_WORKERS.items()]:
            proc, seconds = svc.worker(cls)
            try:
                time.sleep(0.5)
                note(name, seconds, Memory.of(proc.pid, ("worker", "scheduler")))
            finally:
                stop(proc)
    print(f"\n### Start-up and idle memory ({repeat} runs each, interleaved; median [min-max])\n")
    print("| process | ready after | RSS, all processes | PSS, all processes | RSS (USS) of each, MiB |")
    print("| --- | --- | --- | --- | --- |")
    for name in times:
        mems = memory[name]
        print(f"| {name} | {spread(times[name], ' s')} | {spread([m.rss for m in mems], ' MiB', 1 / 1024, '.1f')} "
              f"| {spread([m.pss for m in mems], ' MiB', 1 / 1024, '.1f')} | {mems[len(mems) // 2].of_each()} |")
    print("\nweb: spawn until GET /healthz answers; worker: spawn until registered in rq:workers and idle. "
          "Memory 0.5 s after, the web after 32 requests spread over its workers.")
    return {"times": times, "memory": memory}


# --- the ticket life --------------------------------------------------------------------------------

def _person(name: str, email: str, display: str, template: dict) -> dict:
    return {**template, "self": template["self"].replace("username=admin", f"username={name}"), "name": name,
            "key": name, "emailAddress": email, "displayName": display}


DESCRIPTION = "The nightly export to CSV stops with an error after the first thousand rows. "


class Bodies:
    """JIRA Server webhook bodies (docs/examples' shape, with every field) for one ticket's life."""

    def __init__(self, body_kb: float):
        self.template = json.loads((ROOT / "docs/examples/waiting-for-feedback.json").read_text())
        user = self.template["user"]
        self.customer = _person("jdoe", "jdoe@customer.example", "John Doe", user)
        self.support = _person("sam", "sam@support.example", "Sam Support", user)
        self.bot = _person("relance", "relance@support.example", "relance (automation)", user)
        self.comment_template = self.template["comment"]
        self.pad, comments = 0, []
        sizes = [len(self.build("SUP-1", 1, step, comments, 0)) for step in LIFE if step != TIMER]
        self.pad = max(0, int(body_kb * 1024 - statistics.mean(sizes)))     # the life's mean: body_kb, or more

    # (step, webhookEvent, issue_event_type_name, actor, status after, changelog, comment by)
    def steps(self):
        c, s, b = self.customer, self.support, self.bot
        return {
            "created": ("jira:issue_created", "issue_created", c, "Open", None, None),
            "support comments": ("jira:issue_updated", "issue_commented", s, "Open", None, s),
            "waiting for feedback": ("jira:issue_updated", "issue_generic", s, "Waiting for feedback",
                                     ("Open", "Waiting for feedback"), None),
            "customer answers": ("jira:issue_updated", "issue_commented", c, "Waiting for feedback", None, c),
            "relance's move to Open": ("jira:issue_updated", "issue_generic", b, "Open",
                                       ("Waiting for feedback", "Open"), None),
            "resolved": ("jira:issue_updated", "issue_generic", s, "Resolved", ("Open", "Resolved"), s),
            "relance's move to Closed": ("jira:issue_updated", "issue_generic", b, "Closed",
                                         ("Resolved", "Closed"), None),
        }

    def build(self, key: str, number: int, step: str, comments: list, ts_ms: int) -> bytes:
        event, event_type, actor, status, change, comment_by = self.steps()[step]
        body = copy.deepcopy(self.template)
        issue = body["issue"]
        issue_id = str(20000 + number)
        issue["id"], issue["key"] = issue_id, key
        issue["self"] = re.sub(r"/issue/\d+$", f"/issue/{issue_id}", issue["self"])
        fields = issue["fields"]
        fields["status"] = {**fields["status"], "name": status}
        fields["reporter"] = fields["creator"] = self.customer
        fields["assignee"] = self.support
        fields["summary"] = f"Export to CSV fails for {key}"
        fields["description"] = DESCRIPTION * (1 + self.pad // len(DESCRIPTION))
        body.update(timestamp=ts_ms, webhookEvent=event, issue_event_type_name=event_type, user=actor)
        body.pop("changelog", None)
        body.pop("comment", None)
        if change:
            body["changelog"] = {"id": str(ts_ms), "items": [{"field": "status", "fieldtype": "jira", "from": "1",
                                                              "fromString": change[0], "to": "2",
                                                              "toString": change[1]}]}
        if comment_by:
            comment = {**self.comment_template, "id": str(len(comments) + 1), "author": comment_by,
                       "updateAuthor": comment_by, "body": f"Comment {len(comments) + 1} on {key}: see the logs."}
            comment["self"] = re.sub(r"/issue/\d+/comment/\d+", f"/issue/{issue_id}/comment/{comment['id']}",
                                     comment.get("self", ""))
            comments.append(comment)
            body["comment"] = comment
        fields["comment"] = {"comments": list(comments), "maxResults": len(comments), "total": len(comments),
                             "startAt": 0}
        return json.dumps(body).encode()


TIMER = "auto-close fires"
LIFE = ["created", "support comments", "waiting for feedback", "customer answers", "relance's move to Open",
        "resolved", TIMER, "relance's move to Closed"]
DELIVERIES_PER_TICKET = len(LIFE) - 1


@dataclass
class Ticket:
    key: str
    number: int
    step: int = 0
    waiting: str | None = None          # the delivery id (or TIMER) the next step waits for
    comments: list = field(default_factory=list)


class Driver:
    """Posts each ticket's life to the web, each step once the previous one was processed.

    A ticket waits for its delivery's ``done`` mark, and at the timer for the auto-close's email
    effect on its timeline. Tickets start at ``per_second`` (None: all at once), at most
    ``in_flight`` at a time. When a ticket reaches its timer, the memory of its ticket and timeline
    keys is noted (``open_bytes``): what a ticket costs before it is closed.
    """

    def __init__(self, url: str, redis: Redis, bodies: Bodies, prefix: str = "SUP"):
        self.url, self.redis, self.bodies, self.prefix = url, redis, bodies, prefix
        self.session = requests.Session()
        self.audit = Audit(redis)
        self.posted = self.admitted = 0
        self.body_bytes = 0
        self.done: list[Ticket] = []
        self.open_bytes = {"ticket memory": 0, "timeline": 0}

    def post(self, ticket: Ticket, step: str) -> str:
        did = f"{ticket.key}-{ticket.step}-{int(time.time() * 1000)}"
        raw = self.bodies.build(ticket.key, ticket.number, step, ticket.comments, int(time.time() * 1000))
        r = self.session.post(f"{self.url}/webhooks/jira", data=raw, timeout=30, headers={
            "Content-Type": "application/json", "X-Atlassian-Webhook-Identifier": did,
            "X-Hub-Signature": sign(SECRET, raw)})
        if r.status_code != 202:
            raise RuntimeError(f"POST {step} of {ticket.key}: {r.status_code} {r.text[:200]}")
        self.posted += 1
        self.body_bytes += len(raw)
        return did

    def advance(self, ticket: Ticket) -> None:
        """Post the ticket's next step (or start waiting for its timer)."""
        step = LIFE[ticket.step]
        if step == TIMER:
            ticket.waiting = TIMER
            self.open_bytes["ticket memory"] += self.redis.memory_usage(TicketStore.key(ticket.key), samples=0) or 0
            self.open_bytes["timeline"] += self.redis.memory_usage(Audit.key(ticket.key), samples=0) or 0
        else:
            ticket.waiting = self.post(ticket, step)
        ticket.step += 1

    def _timer_fired(self, ticket: Ticket) -> bool:
        entries, _ = self.audit.page(ticket.key, count=4)
        return any(e["kind"] == "effect done" and e.get("rule") == "auto-close" and e.get("action") == "email"
                   for e in entries)

    def run(self, tickets: int, per_second: float | None = None, in_flight: int = 200,
            until: float | None = None, timeout: float = 1800) -> float:
        """Run ``tickets`` more lives to their end (or until the epoch time ``until``); return the seconds taken."""
        started = time.time()
        active: list[Ticket] = []
        admitted, first = 0, self.admitted
        while (admitted < tickets or active) and (until is None or time.time() < until):
            now = time.time()
            due = tickets if per_second is None else min(tickets, int((now - started) * per_second) + 1)
            while admitted < due and len(active) < in_flight:
                admitted += 1
                ticket = Ticket(f"{self.prefix}-{first + admitted}", first + admitted)
                active.append(ticket)
                self.advance(ticket)
            waiting = [t for t in active if t.waiting != TIMER]
            pipe = self.redis.pipeline(transaction=False)
            for t in waiting:
                pipe.exists(DeliveryStore.key(t.waiting) + ":done")
            ready = [t for t, found in zip(waiting, pipe.execute()) if found]
            ready += [t for t in active if t.waiting == TIMER and self._timer_fired(t)]
            for t in ready:
                if t.step == len(LIFE):
                    active.remove(t)
                    self.done.append(t)
                else:
                    self.advance(t)
            if time.time() - started > timeout:
                raise RuntimeError(f"{len(active)} tickets unfinished after {timeout} s")
            if not ready:
                time.sleep(0.02)
        self.admitted += admitted
        return time.time() - started


def life_rules(tmp: Path, auto_close_seconds: float) -> Path:
    """rules.yaml with the auto-close's 5 days shortened to ``auto_close_seconds``, so it fires during
    the run. The other timers of the life (support-silence, feedback-reminder) are cancelled by the
    next step, as in a ticket's real life; they keep their delays."""
    text = (ROOT / "rules.yaml").read_text()
    assert text.count("after: 5d") == 1
    path = tmp / f"rules-auto-close-{auto_close_seconds:g}s.yaml"
    path.write_text(text.replace("after: 5d", f"after: {auto_close_seconds:g}s"))
    return path


# --- Redis memory by key family ---------------------------------------------------------------------

# family -> (unit it grows with, what bounds it)
FAMILIES = {
    "ticket memory": ("ticket", "retention after the ticket's last activity (+ the longest timer delay)"),
    "timeline": ("ticket", f"the ticket's TTL; at most AUDIT_MAXLEN={defaults.AUDIT_MAXLEN} entries"),
    "delivery bodies": ("delivery", "DELIVERY_TTL after processing (the retention while unprocessed)"),
    "delivery plans": ("delivery", "DELIVERY_TTL after processing"),
    "delivery done marks (dedupe)": ("delivery", "DELIVERY_TTL after processing"),
    "ledger entries": ("ticket", "retention after the effect's last write"),
    "emails kept as sent": ("ticket", "retention after sending"),
    "RQ job records": ("job", f"RQ's result_ttl: RESULT_TTL={defaults.RESULT_TTL_SECONDS} s after the job ends "
                              "(a job that gave up: the retention)"),
    "timers": ("pending timer", "pending only: fired or cancelled, a timer is gone"),
    "SendGrid event marks (dedupe)": ("fixed", f"MAIL_EVENT_TTL={defaults.MAIL_EVENT_TTL_SECONDS // DAY} days (none "
                                      "in a dry run: the outbox has no Event Webhook)"),
    "failures": ("fixed", "retention after the job's last failure (none in the mix)"),
    "reply counters": ("fixed", "an hour (refused senders, flood counters)"),
    "delivery log (dashboard)": ("fixed", "capped: the latest 10,000 deliveries"),
    "recent tickets (dashboard)": ("fixed", "capped: the latest 1,000 tickets"),
    "metrics": ("fixed", "one hash: a field per counter and histogram bucket"),
    "RQ queues, registries, workers": ("fixed", "per queue and per worker"),
    "transient (locks, claims)": ("fixed", "seconds"),
    "other": ("fixed", "?"),
}
TICKET_FAMILIES = [n for n, (grows, _) in FAMILIES.items() if grows == "ticket"]


# Key prefix -> family, the first that matches (delivery and effect keys go by their suffix too).
PREFIXES = [
    ("relance:ticket:", "ticket memory"), ("relance:audit:recent", "recent tickets (dashboard)"),
    ("relance:audit:", "timeline"), ("relance:deliveries:log", "delivery log (dashboard)"),
    ("relance:timers", "timers"), ("relance:metrics", "metrics"),
    ("relance:mail-event:", "SendGrid event marks (dedupe)"), ("relance:failure", "failures"),
    ("relance:replies:", "reply counters"), ("relance:lock:", "transient (locks, claims)"),
    ("relance:reconcile:lock", "transient (locks, claims)"),
    ("relance:remote:", "transient (locks, claims)"),    # the shared call budget: seconds-long keys
    ("rq:job:", "RQ job records"), ("rq:results:", "RQ job records"), ("rq:finished:", "RQ job records"),
    ("rq:", "RQ queues, registries, workers"),
]


def family(key: str) -> str:
    """The family of a Redis key relance or RQ writes ("other" if this benchmark does not know it)."""
    if key.startswith("relance:delivery:"):
        return {":plan": "delivery plans", ":done": "delivery done marks (dedupe)"}.get(key[-5:], "delivery bodies")
    if key.startswith("relance:effect:"):
        return {":sent": "emails kept as sent", "claim": "transient (locks, claims)"}.get(key[-5:], "ledger entries")
    return next((name for prefix, name in PREFIXES if key.startswith(prefix)), "other")


def by_family(redis: Redis) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Bytes (MEMORY USAGE ... SAMPLES 0) and key counts per family, over every key; and the bytes of
    the effects of timer firings (the auto-close's) per family."""
    size: dict[str, int] = {}
    count: dict[str, int] = {}
    fired: dict[str, int] = {}
    keys = [k.decode() for k in redis.scan_iter(count=1000)]
    for i in range(0, len(keys), 1000):
        batch = keys[i:i + 1000]
        pipe = redis.pipeline(transaction=False)
        for k in batch:
            pipe.memory_usage(k, samples=0)
        for k, used in zip(batch, pipe.execute()):
            if used is None:            # expired meanwhile
                continue
            f = family(k)
            size[f] = size.get(f, 0) + used
            count[f] = count.get(f, 0) + 1
            if k.startswith("relance:effect:timer-"):
                fired[f] = fired.get(f, 0) + used
    return size, count, fired


def pending_timer_bytes(redis: Redis, timers: int = 20000) -> float:
    """Bytes per pending timer at steady-state sizes: ``timers`` armed through the timer store, in a
    scratch database."""
    from workers.stores.timers import GENERATION_KEY, PENDING_KEY
    kw = redis.connection_pool.connection_kwargs
    scratch = Redis(host=kw["host"], port=kw["port"], db=15)
    scratch.flushdb()
    store, pipe = TimerStore(scratch), scratch.pipeline(transaction=False)
    rules = ("auto-close", "feedback-reminder", "support-silence")
    for i in range(timers):
        store.arm(rules[i % 3], f"SUP-{100000 + i}", time.time() + DAY, f"{i:012x}", pipe=pipe)
    pipe.execute()
    used = sum(scratch.memory_usage(k, samples=0) or 0 for k in (PENDING_KEY, GENERATION_KEY))
    scratch.flushdb()
    return used / timers


# --- the model --------------------------------------------------------------------------------------

@dataclass
class Unit:
    """What each unit costs, measured by the ``load`` part."""
    bytes_per: dict[str, float]             # family -> bytes per its unit (fixed families: their bytes)
    open_bytes_per: dict[str, float]        # ticket families -> bytes per ticket not yet auto-closed
    jobs_per_ticket: float
    log_entry_bytes: float
    recent_entry_bytes: float


# How long the default rules' timers wait per ticket of the mix, in days (the model's assumption:
# support comments 4 hours after creation, the customer answers within a day, the ticket is resolved
# half a day later and auto-closed 5 days after that).
PENDING_DAYS = {"support-silence": 4 / 24 + 0.5, "feedback-reminder": 1.0, "auto-close": 5.0}
CLOSES_AFTER_DAYS = 5.0


def steady_state(unit: Unit, events_per_day: float, days: float, retention_days: float, delivery_ttl_days: float,
                 result_ttl_days: float, pending_days: dict = PENDING_DAYS) -> dict[str, tuple]:
    """Family -> (units alive, bytes alive) ``days`` after starting at ``events_per_day`` deliveries
    a day, each family alive as long as what bounds it (FAMILIES). Tickets of the last
    CLOSES_AFTER_DAYS are not closed yet: they count at their cost before the auto-close."""
    tickets_per_day = events_per_day / DELIVERIES_PER_TICKET
    tickets = tickets_per_day * min(days, CLOSES_AFTER_DAYS + retention_days)
    still_open = tickets_per_day * min(days, CLOSES_AFTER_DAYS)
    alive = {"ticket": tickets,
             "delivery": events_per_day * min(days, delivery_ttl_days),
             "job": tickets_per_day * unit.jobs_per_ticket * min(days, result_ttl_days),
             "pending timer": tickets_per_day * sum(min(d, days) for d in pending_days.values())}
    out = {}
    for name, (grows, _) in FAMILIES.items():
        b = unit.bytes_per.get(name, 0.0)
        if name == "delivery log (dashboard)":
            n = min(10_000, events_per_day * days)
            out[name] = (n, n * unit.log_entry_bytes)
        elif name == "recent tickets (dashboard)":
            n = min(1000, tickets)
            out[name] = (n, n * unit.recent_entry_bytes)
        elif name in TICKET_FAMILIES:
            out[name] = (tickets, (tickets - still_open) * b + still_open * unit.open_bytes_per[name])
        elif grows in alive:
            out[name] = (alive[grows], alive[grows] * b)
        else:
            out[name] = (None, b)
    return out


def plural(name: str) -> str:
    """What a family's units are called, counted."""
    grows = FAMILIES[name][0]
    if grows == "fixed":
        return "tickets" if name.startswith("recent") else "entries"
    return {"delivery": "deliveries"}.get(grows, grows + "s")


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f}" if n >= 1e5 else f"{n / 1e6:,.3f}"


def per_ticket(unit: Unit, name: str) -> float | None:
    """Bytes one ticket of the mix costs in family ``name`` while they are alive (None: not per ticket)."""
    grows = FAMILIES[name][0]
    many = {"ticket": 1, "delivery": DELIVERIES_PER_TICKET, "job": unit.jobs_per_ticket,
            "pending timer": len(PENDING_DAYS)}.get(grows)
    return None if many is None else many * unit.bytes_per.get(name, 0.0)


def print_model(unit: Unit, model: dict, for_good: dict, events_per_day: float, days: float, config: str) -> None:
    tickets_alive, tickets_for_good = model["ticket memory"][0], for_good["ticket memory"][0]
    print(f"\n### Steady state after {days:g} days at {events_per_day:,.0f} deliveries a day\n\n{config}; "
          f"{events_per_day / DELIVERIES_PER_TICKET:,.0f} tickets a day ({DELIVERIES_PER_TICKET} deliveries each): "
          f"{tickets_alive:,.0f} tickets remembered after {days:g} days, {tickets_for_good:,.0f} for good "
          f"(once the first tickets expire).\n")
    print(f"| family | per ticket, while alive | alive after {days:g} days | MB after {days:g} days | MB for good "
          "| bounded by |\n| --- | --- | --- | --- | --- | --- |")
    total = total_for_good = 0.0
    for name, (alive, used) in model.items():
        if not used:
            continue
        total += used
        total_for_good += for_good[name][1]
        alive_s = f"{alive:,.0f} {plural(name)}" if alive is not None else "one"
        each = per_ticket(unit, name)
        each_s = f"{each:,.0f} B" if each is not None else ""
        print(f"| {name} | {each_s} | {alive_s} | {mb(used)} | {mb(for_good[name][1])} | {FAMILIES[name][1]} |")
    print(f"| **total** | | | **{mb(total)}** | **{mb(total_for_good)}** | |")
    print(f"\nAfter {days:g} days: {total / tickets_alive / 1024:.1f} KiB per ticket remembered, everything "
          f"included; for good: {total_for_good / tickets_for_good / 1024:.1f} KiB.")


def print_growth(unit: Unit, events_per_day: float, retention_days: float) -> None:
    """Redis's total by day from the start, to the day the first tickets expire."""
    ends = CLOSES_AFTER_DAYS + retention_days
    series = []
    for day in (1, 7, 30, 60, ends):
        model = steady_state(unit, events_per_day, day, retention_days, defaults.DELIVERY_TTL_SECONDS / DAY,
                             defaults.RESULT_TTL_SECONDS / DAY)
        series.append(f"day {day:g}: {mb(sum(used for _, used in model.values()))} MB")
    print(f"\nTotal by day at {events_per_day:,.0f} deliveries a day: " + "; ".join(series)
          + ", and so on for good.")


# --- part 2: load, memory after, Redis per ticket ---------------------------------------------------

def part_load(redis_url: str, tmp: Path, args) -> Unit:
    redis = Redis.from_url(redis_url)
    redis.flushall()
    svc = Service(redis_url, tmp, life_rules(tmp, args.auto_close_seconds))
    bodies = Bodies(args.body_kb)
    web, url, _ = svc.web()
    worker, _ = svc.worker()
    try:
        settle(url)
        time.sleep(0.5)
        web_idle, worker_idle = Memory.of(web.pid), Memory.of(worker.pid, ("worker", "scheduler"))
        used_before = int(redis.info("memory")["used_memory"])
        driver = Driver(url, redis, bodies)
        elapsed, growth = 0.0, []
        for batch in range(3):          # memory after each third: does it level off?
            elapsed += driver.run(args.tickets * (batch + 1) // 3 - driver.admitted)
            time.sleep(0.5)
            web_after, worker_after = Memory.of(web.pid), Memory.of(worker.pid, ("worker", "scheduler"))
            growth.append((driver.posted, web_after, worker_after))
    finally:
        stop(worker)
        stop(web)
    used_after = int(redis.info("memory")["used_memory"])
    size, count, fired = by_family(redis)
    tickets, deliveries = args.tickets, driver.posted
    jobs = sum(1 for _ in redis.scan_iter("rq:job:*", count=1000))
    timeline_entries = sum(redis.xlen(Audit.key(t.key)) for t in driver.done) / tickets
    log_len = max(1, redis.xlen("relance:deliveries:log"))
    recent_len = max(1, redis.zcard("relance:audit:recent"))
    per_timer = pending_timer_bytes(redis)
    base_web_after, base_worker_after = baselines_after(svc, redis, bodies, deliveries, jobs)

    print(f"\n### Memory after a load: {tickets} tickets, {deliveries} deliveries (mean body "
          f"{driver.body_bytes / deliveries / 1024:.1f} KiB), {tickets} timer firings, in {elapsed:.0f} s\n")
    print("| process | RSS idle | RSS after | PSS after | RSS (USS) of each after, MiB |\n| --- | --- | --- | --- | --- |")
    rows = [("relance web", web_idle, web_after), ("relance worker", worker_idle, worker_after),
            (f"bare Flask, gunicorn, after {deliveries} POSTs", None, base_web_after),
            (f"rq worker -w SimpleWorker, after {jobs} no-op jobs", None, base_worker_after)]
    for name, idle, after in rows:
        print(f"| {name} | {f'{idle.rss / 1024:.1f} MiB' if idle else ''} | {after.rss / 1024:.1f} MiB "
              f"| {after.pss / 1024:.1f} MiB | {after.of_each()} |")
    print("\nRSS (PSS) after each third of the load: " + "; ".join(
        f"{n} deliveries: web {w.rss / 1024:.1f} ({w.pss / 1024:.1f}) MiB, worker {k.rss / 1024:.1f} "
        f"({k.pss / 1024:.1f}) MiB" for n, w, k in growth))

    per = {"ticket": tickets, "delivery": deliveries, "job": jobs, "pending timer": 1, "fixed": 1}
    bytes_per = {name: size.get(name, 0) / per[grows] for name, (grows, _) in FAMILIES.items()}
    bytes_per["timers"] = per_timer
    open_per = {name: (driver.open_bytes[name] if name in driver.open_bytes else size.get(name, 0) - fired.get(name, 0))
                / tickets for name in TICKET_FAMILIES}
    unit = Unit(bytes_per, open_per, jobs / tickets, size.get("delivery log (dashboard)", 0) / log_len,
                size.get("recent tickets (dashboard)", 0) / recent_len)

    print(f"\n### Redis by key family after the load (MEMORY USAGE, SAMPLES 0, of each of "
          f"{sum(count.values())} keys)\n")
    print("| family | keys | bytes | per its unit | per ticket | per ticket before the auto-close |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, (grows, _) in FAMILIES.items():
        if name == "timers":
            print(f"| timers (none pending: all fired or cancelled) | | | {per_timer:.0f} B per pending timer "
                  f"(20,000 armed) | | |")
            continue
        if not size.get(name):
            continue
        per_unit = f"{bytes_per[name]:,.0f} B per {grows}" if grows != "fixed" else ""
        before = f"{open_per[name]:,.0f} B" if name in open_per else ""
        print(f"| {name} | {count[name]} | {size[name]:,} | {per_unit} | {size[name] / tickets:,.0f} B | {before} |")
    total = sum(size.values())
    print(f"| **total** | {sum(count.values())} | {total:,} | | **{total / tickets / 1024:.1f} KiB** | |")
    print(f"\nused_memory grew by {(used_after - used_before) / tickets / 1024:.1f} KiB per ticket (with the "
          f"allocator's overhead). Timeline: {timeline_entries:.1f} entries per ticket, "
          f"{size.get('timeline', 0) / tickets / timeline_entries:.0f} B each (so at most "
          f"{defaults.AUDIT_MAXLEN * size.get('timeline', 0) / tickets / timeline_entries / 1e6:.1f} MB for a "
          f"ticket at the cap); {jobs / tickets:.1f} RQ jobs per ticket.")

    retention_days = defaults.RETENTION_SECONDS / DAY
    model, for_good = (steady_state(unit, args.events_per_day, days, retention_days,
                                    defaults.DELIVERY_TTL_SECONDS / DAY, defaults.RESULT_TTL_SECONDS / DAY)
                       for days in (args.days, 10 * retention_days))
    print_model(unit, model, for_good, args.events_per_day, args.days,
                f"Retention {retention_days:g} days after the last activity, processed deliveries kept "
                f"{defaults.DELIVERY_TTL_SECONDS / DAY:g} days, RQ job records {defaults.RESULT_TTL_SECONDS} s; "
                f"timers pending {', '.join(f'{k} {v:.2g} d' for k, v in PENDING_DAYS.items())} per ticket")
    print_growth(unit, args.events_per_day, retention_days)
    return unit


def baselines_after(svc: Service, redis: Redis, bodies: Bodies, posts: int, jobs: int) -> tuple[Memory, Memory]:
    """Memory of the bare Flask app after ``posts`` webhook bodies, and of RQ's SimpleWorker after
    ``jobs`` no-op jobs (``os.getpid``: no relance import)."""
    from rq import Queue
    web, url, _ = svc.web(baseline=True)
    try:
        session = requests.Session()
        raw = bodies.build("SUP-1", 1, "resolved", [], 0)
        for _ in range(posts):
            session.post(f"{url}/webhooks/jira", data=raw, headers={"Content-Type": "application/json"})
        time.sleep(0.5)
        web_after = Memory.of(web.pid)
    finally:
        stop(web)
    queue = Queue("noop", connection=redis)
    with redis.pipeline() as pipe:
        for _ in range(jobs):
            queue.enqueue("os.getpid", pipeline=pipe, result_ttl=defaults.RESULT_TTL_SECONDS)
        pipe.execute()
    worker, _ = svc.worker("rq.worker.SimpleWorker")
    try:
        while queue.count or queue.started_job_registry.count:
            time.sleep(0.1)
        time.sleep(0.5)
        worker_after = Memory.of(worker.pid, ("worker", "scheduler"))
    finally:
        stop(worker)
    return web_after, worker_after


# --- part 3: a run on a scaled clock validates the model --------------------------------------------

# The Procfile's worker with the delivery TTL scaled (no setting has it: a real one must outlast
# SendGrid's retries); the value is set before the delivery store reads it.
SCALED_WORKER = """
import sys
from workers import defaults
defaults.DELIVERY_TTL_SECONDS = int(sys.argv[1])
from relance.cli import main
sys.exit(main(["worker"]))
"""


def part_validate(redis_url: str, tmp: Path, args, unit: Unit) -> None:
    """The life on a clock where a day lasts ``args.day_seconds`` (retention, delivery TTL and the
    auto-close scaled alike), tickets started at a steady rate for ``args.days`` days; then the live
    memory by family, measured, against the model's prediction for that run."""
    redis = Redis.from_url(redis_url)
    redis.flushall()
    d = args.day_seconds
    delivery_ttl = int(defaults.DELIVERY_TTL_SECONDS / DAY * d)
    retention = int(defaults.RETENTION_SECONDS / DAY * d)
    svc = Service(redis_url, tmp, life_rules(tmp, CLOSES_AFTER_DAYS * d), {"RELANCE_RETENTION": f"{retention}s"})
    per_day = args.validate_tickets_per_day
    web, url, _ = svc.web()
    started = time.perf_counter()
    worker = spawn([sys.executable, "-c", SCALED_WORKER, str(delivery_ttl)], svc.env(), tmp / "scaled-worker.log")
    try:
        wait_worker(redis, worker, started)
        driver = Driver(url, redis, Bodies(args.body_kb), prefix="VAL")
        t0 = time.time()
        driver.run(int(per_day * args.days) + 1, per_second=per_day / d, in_flight=100_000,
                   until=t0 + args.days * d)
        elapsed_days = (time.time() - t0) / d
        backlog = redis.llen(f"rq:queue:{defaults.QUEUE_NAME}")
        size, count, _ = by_family(redis)          # at once: deliveries go on expiring
        pending = TimerStore(redis).count()
    finally:
        stop(worker)
        stop(web)
    events_per_day = per_day * DELIVERIES_PER_TICKET
    model = steady_state(unit, events_per_day, elapsed_days, defaults.RETENTION_SECONDS / DAY,
                         defaults.DELIVERY_TTL_SECONDS / DAY, defaults.RESULT_TTL_SECONDS / d,
                         {"auto-close": CLOSES_AFTER_DAYS})
    print(f"\n### Validation: {args.days:g} days on a clock where a day lasts {d:g} s\n")
    print(f"{per_day:g} tickets a day ({driver.admitted} in all), processed deliveries kept {delivery_ttl} s "
          f"(7 days), retention {retention} s (90 days), auto-close after {CLOSES_AFTER_DAYS * d:g} s (5 days); "
          f"RQ's job records (1 hour, not scaled) all alive. Measured after {elapsed_days:.1f} days, with "
          f"{backlog} jobs queued.\n")
    print("| family | keys alive | model: alive | measured bytes | model bytes | measured / model |")
    print("| --- | --- | --- | --- | --- | --- |")
    measured_total = predicted_total = 0.0
    for name, (alive, predicted) in model.items():
        measured = size.get(name, 0)
        if not measured and not predicted:
            continue
        measured_total += measured
        predicted_total += predicted
        ratio = f"{measured / predicted:.2f}" if predicted else ""
        alive_s = f"{alive:,.0f} {plural(name)}" if alive is not None else ""
        keys = f"{count.get(name, 0)} ({pending} pending)" if name == "timers" else count.get(name, 0)
        print(f"| {name} | {keys} | {alive_s} | {measured:,} | {predicted:,.0f} | {ratio} |")
    print(f"| **total** | {sum(count.values())} | | {measured_total:,.0f} | {predicted_total:,.0f} "
          f"| **{measured_total / predicted_total:.2f}** |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="startup,load,validate",
                        help="comma-separated: startup, load, validate (validate uses load's figures: it runs it)")
    parser.add_argument("--repeat", type=int, default=5, help="start-up runs of each process")
    parser.add_argument("--tickets", type=int, default=300, help="tickets of the load (7 deliveries each)")
    parser.add_argument("--body-kb", type=float, default=10,
                        help="pad the bodies' descriptions to this mean size, if more than their own (13 KiB)")
    parser.add_argument("--auto-close-seconds", type=float, default=2, help="the load's auto-close delay")
    parser.add_argument("--events-per-day", type=float, default=10_000)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--day-seconds", type=float, default=2, help="validate: how long a day lasts")
    parser.add_argument("--validate-tickets-per-day", type=float, default=6)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # stop what it started on the way out
    parts = set(args.parts.split(","))
    unknown = parts - {"startup", "load", "validate"}
    if unknown:
        parser.error(f"unknown part {', '.join(sorted(unknown))}")
    print(f"## Footprint ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the start)")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", persist=False) as server:
        tmp = Path(tmp)
        if "startup" in parts:
            part_startup(server.url, tmp, args.repeat)
        if parts & {"load", "validate"}:
            unit = part_load(server.url, tmp, args)
            if "validate" in parts:
                part_validate(server.url, tmp, args, unit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
