"""What the operator's dashboard reads and the few things it does, each a handful of Redis calls.

Nothing here scans keys: pages read one capped stream (XREVRANGE with COUNT), a
range of a sorted set, or one key per rule; so a page costs the same with ten
tickets in Redis or a hundred thousand.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from redis import Redis

from .. import defaults
from .audit import Audit
from .connection import text
from ..failures import FailureStore
from .timers import GENERATION_KEY, PENDING_KEY, PendingTimer, TimerStore, job_id, member

DELIVERY_LOG_KEY = "relance:deliveries:log"     # stream: the latest webhooks and their verdict
DELIVERY_LOG_MAX = 10_000


def delivery_log_fields(**fields) -> dict:
    """A delivery log entry's fields: those set, each cut to 300 characters."""
    return {k: str(v)[:300] for k, v in fields.items() if v is not None}


def log_delivery(pipe, ttl: int, **fields) -> None:
    """Add one webhook's verdict to the capped delivery log (in the caller's pipeline)."""
    pipe.xadd(DELIVERY_LOG_KEY, delivery_log_fields(**fields), maxlen=DELIVERY_LOG_MAX, approximate=True)
    pipe.expire(DELIVERY_LOG_KEY, int(ttl))


def delivery_page(redis: Redis, count: int = 100, before: str | None = None) -> tuple[list[dict], str | None]:
    """The latest logged webhooks, newest first, and the ``before`` of the next page (None on the last)."""
    top = f"({before}" if before and _is_entry_id(before) else "+"
    rows = redis.xrevrange(DELIVERY_LOG_KEY, max=top, min="-", count=count + 1)
    out = [{"id": text(i), **{text(k): text(v) for k, v in f.items()}} for i, f in rows[:count]]
    return out, (out[-1]["id"] if len(rows) > count else None)


def _is_entry_id(value: str) -> bool:
    ms, dash, seq = value.partition("-")
    return bool(dash) and ms.isdigit() and seq.isdigit() and len(value) <= 41


def parked(redis: Redis, timers: list[PendingTimer]) -> set[tuple[str, str]]:
    """Which of these timers are parked: their job gave up (a failure is recorded): one round trip."""
    if not timers:
        return set()
    pipe = redis.pipeline(transaction=False)
    for t in timers:
        pipe.exists(FailureStore.key(job_id(member(t.rule, t.ticket), t.generation)))
    return {(t.rule, t.ticket) for t, found in zip(timers, pipe.execute()) if found}


def ticket_timers(timers: TimerStore, rule_names, ticket: str) -> list[PendingTimer]:
    """The ticket's pending timers, one per rule at most: two reads per rule, in one round trip."""
    names = list(rule_names)
    pipe = timers.redis.pipeline(transaction=False)
    for name in names:
        m = f"{name}|{ticket}"
        pipe.zscore(PENDING_KEY, m)
        pipe.hget(GENERATION_KEY, m)
    found = pipe.execute() if names else []
    out = [PendingTimer(name, ticket, found[2 * i], text(found[2 * i + 1]))
           for i, name in enumerate(names) if found[2 * i] is not None and found[2 * i + 1]]
    return sorted(out, key=lambda t: t.due)


def gave_up(timers: TimerStore, rule: str, ticket: str, generation: str) -> bool:
    """Whether this timer's job gave up (it is parked): only a retry of that failure runs it again,
    since its job id, kept in RQ's failed registry, cannot be queued twice."""
    return bool(timers.redis.exists(FailureStore.key(job_id(member(rule, ticket), generation))))


def run_now(timers: TimerStore, audit: Audit, rule: str, ticket: str, generation: str, user: str) -> bool:
    """Make a pending timer due now (the same generation, so the pump fires it as it would have);
    False if it was cancelled, fired or re-armed meanwhile. Recorded on the timeline with who."""
    if not timers.park(f"{rule}|{ticket}", generation, time.time()):
        return False
    audit.record(ticket, "timer run now", rule=rule, generation=generation, by=user)
    return True


def cancel(timers: TimerStore, audit: Audit, rule: str, ticket: str, user: str) -> bool:
    """Cancel a pending timer; False if there was none. Recorded on the timeline with who."""
    if timers.get(rule, ticket) is None:
        return False
    timers.cancel(rule, ticket)
    audit.record(ticket, "timer cancelled", rule=rule, by=user, because="cancelled by an operator")
    return True


# -- presentation ------------------------------------------------------------

def iso(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def entry_time(entry_id: str) -> float:
    return int(entry_id.partition("-")[0]) / 1000


def relative(epoch: float, now: float | None = None) -> str:
    """'in 2 days', '3 hours ago', 'now'."""
    delta = epoch - (time.time() if now is None else now)
    seconds = abs(delta)
    if seconds < 45:
        return "now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size * 0.95 or unit == "minute":
            n = max(1, round(seconds / size))
            words = f"{n} {unit}{'s' if n != 1 else ''}"
            return f"in {words}" if delta > 0 else f"{words} ago"
    return "now"    # pragma: no cover


@dataclass(frozen=True)
class Line:
    """One timeline entry as the ticket page shows it."""

    id: str
    kind: str
    at: float
    tone: str           # ok, skip, fail, info
    title: str
    details: list       # [(label, value)]


_TONES = {"effect done": "ok", "rule fired": "ok", "timer fired": "ok", "timer armed": "info",
          "effect failed": "fail", "gave up": "fail", "attempt failed": "fail",
          "effect skipped": "skip", "rule skipped": "skip", "rules skipped": "skip", "timer skipped": "skip",
          "timer cancelled": "skip", "timer dropped": "skip", "timer superseded": "skip",
          "reply received": "ok", "reply refused": "fail",
          "email delivered": "ok", "email bounced": "fail", "email blocked": "fail", "email dropped": "fail",
          "email reported as spam": "fail"}
_LABELS = {"why": "why", "reason": "reason", "detail": "detail", "to": "to", "because": "because",
           "by": "by", "outcome": "outcome", "delivery": "delivery", "job": "job", "effect": "effect",
           "webhook_event": "event", "status": "status", "note": "note", "retries_left": "retries left",
           "sg_event_id": "SendGrid event", "response": "server's answer",
           "sender": "from", "subject": "subject", "attachments": "attachments"}


def describe(entry: dict) -> Line:
    """A timeline entry as a title and labelled details, in words a support lead reads."""
    kind = entry["kind"]
    data = {k: v for k, v in entry.items() if k not in ("id", "kind")}
    rule = data.pop("rule", None)
    title = kind
    if kind == "delivery":
        title = f"delivery: {data.pop('outcome', '')}"
        data["outcome"] = None
    elif kind == "transition":
        title = f"{data.get('from_status') or data.get('left') or '?'} → {data.get('to_status') or data.get('entered')}"
        title = f"transition: {title}" + (" (inferred)" if data.get("inferred") else "")
        for k in ("left", "entered", "from_status", "to_status", "inferred"):
            data.pop(k, None)
    elif kind.startswith("effect "):
        action = data.pop("action", "effect")
        title = f"{action} {kind.split()[1]}"
        if action == "email" and kind == "effect done" and data.get("effect"):
            data["email"] = ("sent", data["effect"])
    elif kind.startswith("email ") and data.get("effect"):
        # What SendGrid said of an email: which one, and a link to it as it was sent.
        title = f"{kind}: {data.pop('template', None) or 'email'}" + (
            f" (to {data['audience']})" if data.get("audience") else "")
        data.pop("audience", None)
        data["email"] = ("sent", data["effect"])
    elif kind == "rules skipped":
        skipped = data.pop("rules", {}) or {}
        return Line(entry["id"], kind, entry_time(entry["id"]), "skip", f"{len(skipped)} rules skipped",
                    [(name, why) for name, why in sorted(skipped.items())])
    if rule:
        title = f"{title} · {rule}"
    details = []
    due_ms = data.pop("due_ms", None)
    if due_ms is not None:
        details.append(("due", ("time", due_ms / 1000)))
    occurred_at = data.pop("occurred_at", None)
    if isinstance(occurred_at, (int, float)):
        details.append(("at", ("time", occurred_at)))
    for k, v in data.items():
        if v in (None, "", [], {}) or k in ("generation", "event_type", "status_change"):
            continue
        if k == "email":
            details.append(("email", v))      # ("sent", effect id): a link to the email as sent
            continue
        if isinstance(v, (list, tuple)):
            v = ", ".join(map(str, v))
        elif isinstance(v, dict):
            v = json.dumps(v, ensure_ascii=False)
        details.append((_LABELS.get(k, k.replace("_", " ")), v))
    return Line(entry["id"], kind, entry_time(entry["id"]), _TONES.get(kind, "info"), title, details)


def queue_depth(queue) -> int:
    try:
        return queue.count
    except Exception:       # pragma: no cover - a page still answers without it
        return -1


PAGE_SIZE = 100
TIMELINE_MAX = defaults.AUDIT_MAXLEN
