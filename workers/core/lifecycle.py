"""Ticket events -> lifecycle transitions. Pure: no I/O.

A lifecycle transition is the ticket leaving one lifecycle state and entering
another (``left=resolved, entered=reopened``). JIRA statuses map onto states
through the rules file; moves between two statuses of one state are no
transition. Deliveries arrive late and out of order, so each ticket remembers
the time of the newest event applied: an older event changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import defaults
from .events import TicketEvent
from .rules import RuleSet


@dataclass(frozen=True)
class TicketMemory:
    """What the service last knew of a ticket: its status and when JIRA said so."""

    status: str | None = None
    state: str | None = None
    ts_ms: int | None = None        # JIRA time of the newest event applied
    since_ms: int | None = None     # JIRA time the ticket entered its current state
    last_comment: int | None = None  # the highest comment id seen: Cloud sends a comment twice
    reporter_account: str | None = None  # who reported it (Cloud accountId / Data Center username):
    reporter_name: str | None = None     # comment events from Cloud do not say

    FIELDS = ("status", "state", "ts_ms", "since_ms", "last_comment", "reporter_account", "reporter_name")

    @property
    def reporter(self):
        """The reporter as far as relance knows (ids only), or None."""
        from .events import Person
        if not (self.reporter_account or self.reporter_name):
            return None
        return Person(account_id=self.reporter_account, name=self.reporter_name)

    def to_dict(self) -> dict:
        return {k: "" if getattr(self, k) is None else str(getattr(self, k)) for k in self.FIELDS}

    @classmethod
    def from_dict(cls, data: dict | None) -> "TicketMemory":
        data = data or {}
        ms = {k: int(data[k]) if data.get(k) else None for k in ("ts_ms", "since_ms", "last_comment")}
        return cls(status=data.get("status") or None, state=data.get("state") or None,
                   reporter_account=data.get("reporter_account") or None,
                   reporter_name=data.get("reporter_name") or None, **ms)


@dataclass(frozen=True)
class Transition:
    left: str | None
    entered: str | None
    from_status: str | None = None
    to_status: str | None = None
    inferred: bool = False      # no status change in the event, but the status differs from memory

    def describe(self) -> str:
        parts = [f"left {self.left}" if self.left else "", f"entered {self.entered}" if self.entered else ""]
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class Reading:
    """How one event reads against the ticket's memory."""

    transition: Transition | None
    memory: TicketMemory          # the memory to keep after this event
    stale: bool = False
    note: str = ""
    clamped: str = ""             # why the event's time was not taken as given
    new_comment: bool = False     # the event brings a comment not seen before


def read_event(rules: RuleSet, event: TicketEvent, memory: TicketMemory, now_ms: int) -> Reading:
    """Turn an event into at most one lifecycle transition, given what we knew.

    An event dated more than MAX_CLOCK_AHEAD_SECONDS after ``now_ms`` is read as
    happening now (``clamped`` says so): taken as given, it would make every
    later genuine event look stale for ever.
    """
    ts = event.timestamp_ms or now_ms
    clamped = ""
    if ts > now_ms + defaults.MAX_CLOCK_AHEAD_SECONDS * 1000:
        clamped = (f"event dated {(ts - now_ms) // 1000} s ahead of the clock; read as now "
                   f"(more than {defaults.MAX_CLOCK_AHEAD_SECONDS} s ahead is not believed)")
        ts = now_ms
    if memory.ts_ms is not None and ts < memory.ts_ms:
        return Reading(None, memory, stale=True, clamped=clamped,
                       note=f"event of {ts} is older than the ticket's last known change ({memory.ts_ms})")

    if event.status_change is not None:
        from_status, to_status = event.status_change
        from_state = rules.state_of(from_status)
        inferred = False
    elif event.is_creation:
        from_status, to_status, from_state, inferred = None, event.status, None, False
    else:
        from_status, to_status, from_state = memory.status, event.status, memory.state
        inferred = True
    to_status = to_status or memory.status
    to_state = rules.state_of(to_status)
    since = memory.since_ms if (to_state == memory.state and memory.since_ms) else ts
    comment_id = _comment_number(event)
    # A reply by email is decided once per inbound delivery, even if JIRA's webhook for the
    # comment relance posted for it was read first (that one counts as automation's).
    new_comment = event.adds_comment and (event.comment.via_email or comment_id is None
                                          or memory.last_comment is None or comment_id > memory.last_comment)
    last_comment = max(filter(None, (memory.last_comment, comment_id)), default=None)
    reporter = event.reporter
    new_memory = TicketMemory(status=to_status, state=to_state, ts_ms=ts, since_ms=since, last_comment=last_comment,
                              reporter_account=reporter.account_id if reporter else memory.reporter_account,
                              reporter_name=reporter.name if reporter else memory.reporter_name)

    if to_status is None or from_state == to_state or (inferred and memory.state is None):
        return Reading(None, new_memory, clamped=clamped, new_comment=new_comment)
    return Reading(Transition(left=from_state, entered=to_state, from_status=from_status,
                              to_status=to_status, inferred=inferred), new_memory, clamped=clamped,
                   new_comment=new_comment)


def _comment_number(event: TicketEvent) -> int | None:
    """The id of the comment the event adds, as a number (JIRA's comment ids grow), or None."""
    if not event.adds_comment or not event.comment.id or not event.comment.id.isdigit():
        return None
    return int(event.comment.id)
