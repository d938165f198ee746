"""Notifications to chat: a JSON POST to an incoming-webhook URL (Slack, Microsoft Teams, Google Chat).

The body is ``{"text": ...}``, which all three accept. The URL is read from an
environment variable the rule names (``url_env``), never from the rules file,
so the webhook's secret stays out of git.
"""

from __future__ import annotations

import logging

import requests

from .. import defaults
from ..exceptions import NotifyError, TransientError

log = logging.getLogger("relance.notify")


class Notifier:
    """POSTs chat messages. 429/5xx/time-outs raise TransientError; other 4xx NotifyError."""

    def __init__(self, environ, timeout: float = defaults.HTTP_TIMEOUT_SECONDS):
        self.environ = environ
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": "relance"})

    def url(self, url_env: str) -> str | None:
        return self.environ.get(url_env) or None

    def post(self, url: str, text: str) -> int:
        """POST ``{"text": text}`` to ``url``; return the status code.

        ``&``, ``<`` and ``>`` are escaped as Slack and Google Chat ask: in their text a
        ticket summary like ``<!channel>`` would otherwise notify a whole channel.
        """
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        try:
            response = self.session.post(url, json={"text": text}, timeout=self.timeout)
        except requests.RequestException as e:
            raise TransientError(f"chat webhook unreachable: {e.__class__.__name__}") from e
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"chat webhook answered {response.status_code}")
        if response.status_code >= 400:
            raise NotifyError(f"chat webhook refused the message ({response.status_code}): {response.text[:200]}")
        return response.status_code
