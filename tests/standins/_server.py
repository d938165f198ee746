"""Shared plumbing for the HTTP stand-ins: a background WSGI server and a request recorder.

The stand-ins are real HTTP servers bound to 127.0.0.1 on a random free port, so the
code under test talks to them exactly as it would talk to the real service (its own
HTTP client, its own headers, its own retries), not through mocks.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

T = TypeVar("T")


class _QuietHandler(WSGIRequestHandler):
    """Request handler that does not log every request to stderr."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class StandInServer:
    """Runs a WSGI app on 127.0.0.1:<random port> in a daemon thread.

    `start()` returns the base URL ("http://127.0.0.1:PORT", no trailing slash);
    `stop()` shuts the server down and waits for its thread. Used as a context
    manager, the server is started on entry (the `with` target is the server itself)
    and stopped on exit.
    """

    def __init__(self, app: Callable[..., Any]):
        self._app = app
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    def start(self) -> str:
        """Start serving (idempotent) and return the base URL."""
        if self._server is None:
            server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=_QuietHandler)
            self._server = server
            self.url = f"http://127.0.0.1:{server.server_port}"
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll interval
                name=f"{type(self).__name__}:{server.server_port}",
                daemon=True,
            )
            self._thread.start()
        assert self.url is not None
        return self.url

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as a stand-in received it, with the status it answered.

    `headers` keys use the canonical capitalisation werkzeug gives them
    ("Authorization", "Content-Type"); `query` keeps the first value of each
    parameter; `json` is the parsed body, or None when the body is empty or not JSON
    (`body` always holds the raw bytes).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    body: bytes = b""
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)


class Recorder(Generic[T]):
    """A thread-safe append-only list that tests can block on.

    Every `add` wakes the waiters of `wait_for`, so tests wait on a Condition instead of
    polling with sleeps.
    """

    def __init__(self, what: str = "items", describe: Callable[[T], str] = repr):
        self._items: list[T] = []
        self._cond = threading.Condition()
        self._what = what
        self._describe = describe

    def add(self, item: T) -> None:
        """Append `item` and wake every waiter."""
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    @property
    def items(self) -> list[T]:
        """A snapshot copy of the recorded items, oldest first."""
        with self._cond:
            return list(self._items)

    def wait_for(self, predicate: Callable[[list[T]], Any], timeout: float = 10.0) -> Any:
        """Block until `predicate(snapshot)` is truthy and return that value.

        The predicate is called with a fresh snapshot list each time something is
        recorded (and once immediately). On timeout, raises AssertionError listing what
        was recorded, so a failing test says what did arrive.
        """
        with self._cond:
            result = self._cond.wait_for(lambda: predicate(list(self._items)), timeout=timeout)
            if result:
                return result
            seen = "\n  ".join(self._describe(item) for item in self._items) or "(nothing)"
            raise AssertionError(
                f"timed out after {timeout}s waiting for {self._what} matching "
                f"{getattr(predicate, '__name__', predicate)!s}; "
                f"{len(self._items)} recorded:\n  {seen}"
            )


def describe_request(req: RecordedRequest) -> str:
    """One line for a recorded request: "POST /path?x=1 -> 204"."""
    query = "&".join(f"{k}={v}" for k, v in req.query.items())
    return f"{req.method} {req.path}{'?' + query if query else ''} -> {req.status}"


def record_exchange(recorder: Recorder[RecordedRequest], request: Any, response: Any) -> None:
    """Record a Flask request/response pair into `recorder` (call from after_request)."""
    body = request.get_data(cache=True)
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    recorder.add(
        RecordedRequest(
            method=request.method,
            path=request.path,
            query=request.args.to_dict(flat=True),
            headers=dict(request.headers),
            json=parsed,
            body=body,
            status=response.status_code,
            response_headers=dict(response.headers),
        )
    )
