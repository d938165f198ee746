"""A local stand-in for a chat incoming webhook (Slack, Microsoft Teams, Google Chat), for tests.

Like Slack's: POST JSON with a non-empty ``text`` to the webhook path answers 200 ``ok``;
no ``text`` answers 400 ``no_text``; an unknown path answers 404 ``no_service``; a POST
that is not JSON answers 400 ``invalid_payload``. ``fail_next`` injects 429 (with
Retry-After) or 5xx answers.
"""

from __future__ import annotations

import threading

from flask import Flask, Response, request

from ._server import StandInServer

PATH = "/services/T000/B000/secret"


class ChatStandIn(StandInServer):
    """Records each accepted message's JSON body in ``messages``."""

    def __init__(self):
        self.messages: list[dict] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        app = Flask("chat_standin")
        app.add_url_rule("/<path:path>", "post", self._post, methods=["POST"])
        super().__init__(app)

    @property
    def webhook_url(self) -> str:
        return f"{self.url}{PATH}"

    def fail_next(self, status: int) -> None:
        with self._lock:
            self._failures.append(status)

    def _post(self, path: str):
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure:
            return Response("rate_limited" if failure == 429 else "error", failure,
                            {"Retry-After": "1"} if failure == 429 else {})
        if "/" + path != PATH:
            return Response("no_service", 404)
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return Response("invalid_payload", 400)
        if not isinstance(body.get("text"), str) or not body["text"].strip():
            return Response("no_text", 400)
        with self._lock:
            self.messages.append(body)
        return Response("ok", 200)
