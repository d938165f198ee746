"""Shared plumbing for the HTTP stand-ins: a background WSGI server and a request recorder.

The stand-ins are real HTTP servers bound to 127.0.0.1 on a random free port, so the
code under test talks to them exactly as it would talk to the real service (its own
HTTP client, its own headers, its own retries), not through mocks.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

T = TypeVar("T")


class _QuietHandler(WSGIRequestHandler):
    """Request handler that does not log every request to stderr."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class RateLimit:
    """A rate limit as JIRA Cloud and SendGrid apply one: a token bucket per scope (JIRA: per endpoint and
    HTTP method), `rate` requests a second with bursts of up to `burst`.

    `check(scope)` is None for a request within the limit, else the whole seconds to wait (at least 1,
    as JIRA's Retry-After). Like JIRA ("if you reissue the request before the retry period expires, the
    request will fail and return the same or longer Retry-After period"), a scope stays refused until
    the wait it announced is over, counted from when the client gets the answer (`latency` after the
    decision). Counters: `limited` requests refused; `ignored`, those among them that arrived after the
    client had the 429 (NOTICE_SECONDS after it was sent) and before its wait was over: a client that honours
    Retry-After, and shares it between its workers, sends none.
    """

    NOTICE_SECONDS = 0.25          # from a 429 leaving the server to all its client's workers knowing (loaded machine)

    def __init__(self, rate: float, burst: int | None = None, latency: float = 0.0):
        if rate <= 0:
            raise ValueError("rate must be positive (requests per second)")
        self.rate, self.burst, self.latency = rate, burst or max(1, math.ceil(rate)), latency
        self._lock = threading.Lock()
        self._scopes: dict[Any, list[float]] = {}        # scope -> [tokens, refilled at, refused until, notice at]
        self.limited = self.ignored = 0

    def check(self, scope: Any = None) -> int | None:
        now = time.monotonic()
        with self._lock:
            tokens, last, refused_until, notice_at = self._scopes.get(scope) or (self.burst, now, 0.0, 0.0)
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = None
            if now < refused_until:
                self.limited += 1
                self.ignored += now >= notice_at
                wait = max(1, math.ceil(refused_until - now))
            elif tokens >= 1:
                tokens -= 1
            else:
                self.limited += 1
                wait = max(1, math.ceil((1 - tokens) / self.rate))
                answered = now + self.latency
                refused_until, notice_at = answered + wait, answered + self.NOTICE_SECONDS
            self._scopes[scope] = [tokens, now, refused_until, notice_at]
            return wait


class StandInServer:
    """Runs a WSGI app on 127.0.0.1:<random port> (or `port`) in a daemon thread.

    `start()` returns the base URL ("http://127.0.0.1:PORT", no trailing slash);
    `stop()` shuts the server down and waits for its thread. Used as a context
    manager, the server is started on entry (the `with` target is the server itself)
    and stopped on exit. With `latency_ms`, every answer leaves that much later, as
    from a service across the Internet. `stats()` counts answers by status (and what
    each stand-in adds); with `expose_stats`, GET /_standin/stats answers it as JSON,
    for a benchmark running the stand-in in another process.
    """

    def __init__(self, app: Callable[..., Any], latency_ms: float = 0, port: int = 0, expose_stats: bool = False):
        self._app = app
        self.latency = latency_ms / 1000
        self.port = port
        self.expose_stats = expose_stats
        self.statuses: Counter = Counter()
        self._counting = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    def stats(self) -> dict[str, Any]:
        """Answers by HTTP status ({"202": 10000, "429": 3}); stand-ins add their own counts."""
        return {"statuses": {str(k): v for k, v in sorted(self.statuses.items())}}

    def _serve(self, environ, start_response):
        if self.expose_stats and environ.get("PATH_INFO") == "/_standin/stats":
            body = json.dumps(self.stats()).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]

        def counted(status, headers, exc_info=None):
            with self._counting:
                self.statuses[int(status.split(" ", 1)[0])] += 1
            return start_response(status, headers, exc_info)

        answer = self._app(environ, counted)
        if self.latency:
            time.sleep(self.latency)            # the answer is complete: it leaves late
        return answer

    def start(self) -> str:
        """Start serving (idempotent) and return the base URL."""
        if self._server is None:
            server = make_server("127.0.0.1", self.port, self._serve, threaded=True, request_handler=_QuietHandler)
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
