"""Logging: readable text by default, one JSON object a line with ``LOG_FORMAT=json``.

Every record carries the ticket key and the delivery id of the job that logs
it, when there is one (``about(ticket=..., delivery=...)`` sets them for the
duration of a job); JSON lines hold them as ``ticket`` and ``delivery`` fields,
text lines show them after the logger's name.
"""

from __future__ import annotations

import contextvars
import logging
from contextlib import contextmanager

from pythonjsonlogger.json import JsonFormatter

FORMATS = ("text", "json")
_TICKET = contextvars.ContextVar("relance_ticket", default=None)
_DELIVERY = contextvars.ContextVar("relance_delivery", default=None)


@contextmanager
def about(ticket: str | None = None, delivery: str | None = None):
    """Within this block, log records name ``ticket`` and ``delivery`` (those given)."""
    tokens = [(var, var.set(value)) for var, value in ((_TICKET, ticket), (_DELIVERY, delivery)) if value]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in (("ticket", _TICKET), ("delivery", _DELIVERY)):
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


class _Text(logging.Formatter):
    """``time LEVEL logger [TICKET delivery]: message``."""

    def format(self, record: logging.LogRecord) -> str:
        where = " ".join(x for x in (getattr(record, "ticket", None), getattr(record, "delivery", None)) if x)
        record.where = f" [{where}]" if where else ""
        return super().format(record)


def configure(log_format: str = "text", level: int = logging.INFO) -> None:
    """Set up the root logger for a web or worker process (replacing what was there)."""
    handler = logging.StreamHandler()
    handler.addFilter(_Context())
    if log_format == "json":
        handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}{ticket}{delivery}", style="{",
                                           rename_fields={"asctime": "time", "levelname": "level",
                                                          "name": "logger"}))
    else:
        handler.setFormatter(_Text("%(asctime)s %(levelname)s %(name)s%(where)s: %(message)s"))
    handler.relance = True
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "relance", False)]:     # ours only: keep others'
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
