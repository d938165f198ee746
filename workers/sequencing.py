"""Per-ticket order inside one worker process that runs several jobs at once.

The worker admits each job it dequeues, in queue order, and says which ticket it
is about when that is known from its arguments (a timer's, a rule retry's). A
delivery learns its ticket only once it has read its body: it declares it then
(``wait_for_turn``), and waits until every job of the same ticket dequeued before
it has finished, and until every earlier job whose ticket is still unknown has
declared its own. So the jobs of one ticket run one after the other, in queue
order, as with one job at a time, while jobs of different tickets overlap.
Across processes the ticket's decision lock (workers/stores/tickets.py) and the
staleness checks by timestamp keep decisions consistent, as before.
"""

from __future__ import annotations

import itertools
import threading
import time

from .exceptions import TicketBusy

UNKNOWN = object()      # the job's ticket is not known yet: later jobs wait for it to say
NO_TICKET = None        # the job is about no ticket: it orders nothing


class TicketSequencer:
    """Turns of the jobs in flight in one process: {turn number: ticket key, UNKNOWN or NO_TICKET}."""

    def __init__(self):
        self._turns: dict[int, object] = {}
        self._numbers = itertools.count()
        self._changed = threading.Condition()

    def admit(self, ticket=UNKNOWN) -> int:
        """Register a job just dequeued (call in queue order); its turn number."""
        with self._changed:
            turn = next(self._numbers)
            self._turns[turn] = ticket
            return turn

    def declare(self, turn: int, ticket: str, timeout: float | None = None) -> None:
        """Say that job ``turn`` is about ``ticket``, then wait until no earlier job in flight is about the
        same ticket or about one still unknown. TicketBusy after ``timeout`` seconds of waiting."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            self._turns[turn] = ticket
            self._changed.notify_all()
            while self._blocked(turn, ticket):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TicketBusy(f"{ticket}: an earlier job of the ticket is still running in this worker")
                # Short waits: a job timeout (an exception raised in this thread) lands between them.
                self._changed.wait(0.5 if left is None else min(left, 0.5))

    def _blocked(self, turn: int, ticket: str) -> bool:
        return any(other < turn and (about is UNKNOWN or about == ticket) for other, about in self._turns.items())

    def done(self, turn: int) -> None:
        """Job ``turn`` has finished (done, failed or timed out): later jobs may go."""
        with self._changed:
            self._turns.pop(turn, None)
            self._changed.notify_all()

    def in_flight(self) -> int:
        with self._changed:
            return len(self._turns)


_current = threading.local()


def running(sequencer: TicketSequencer, turn: int):
    """Mark the calling thread as running job ``turn`` of ``sequencer`` (None, None: no longer)."""
    _current.sequencer, _current.turn = sequencer, turn


def wait_for_turn(ticket: str, timeout: float | None = None) -> None:
    """Called by a job once it knows its ticket: returns when earlier jobs of that ticket in this process
    are done. Outside a worker running several jobs at once, returns at once."""
    sequencer = getattr(_current, "sequencer", None)
    if sequencer is not None:
        sequencer.declare(_current.turn, ticket, timeout)
