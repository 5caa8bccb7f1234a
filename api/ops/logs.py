"""Structured logs: one event per line, JSON when nobody is watching a terminal.

``crashd serve --log-format json|text`` (default ``auto``: JSON unless stderr is a
terminal). A JSON line is one object::

    {"ts":"2026-12-01T09:50:00.123Z","level":"info","logger":"crashd.access",
     "msg":"request_id=… key_id=… method=GET path=/api/v1/game/state status=200 …",
     "request_id":"…","key_id":"key_…","method":"GET","path":"/api/v1/game/state",
     "status":200,"duration_ms":0.61}

Every line logged while a request is being served carries that request's
``request_id`` and ``key_id`` (the key's id, ``-`` without one: never the key): the
request middleware puts its scope in :data:`REQUEST_SCOPE`, a context variable Trio
hands down to every task the request starts. A log call adds machine-readable members
with ``extra={"fields": {...}}``; the message stays readable as text. Nothing here
knows a secret: what is logged is what the callers chose to log, and the security
suite's log scan reads these JSON lines too (``tests/support/security.py``).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["auto", "json", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "json", "text")

REQUEST_SCOPE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "crashd_request_scope", default=None
)
"""The ASGI scope of the request being served (set by the request middleware)."""

_SCOPE_REQUEST_ID = "crashd.request_id"
_SCOPE_KEY_ID = "crashd.key_id"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def request_fields() -> dict[str, str]:
    """``request_id`` and ``key_id`` of the request this task serves, if any."""
    scope = REQUEST_SCOPE.get()
    if scope is None:
        return {}
    return {
        "request_id": str(scope.get(_SCOPE_REQUEST_ID, "-")),
        "key_id": str(scope.get(_SCOPE_KEY_ID, "-")),
    }


def _iso(created: float) -> str:
    return (
        datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class JsonFormatter(logging.Formatter):
    """A record as one JSON object on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(request_fields())
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for name, value in fields.items():
                doc.setdefault(str(name), value)
        if record.exc_info and record.exc_info[1] is not None:
            doc["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"), default=str, ensure_ascii=False)


def resolve(fmt: LogFormat, stream: TextIO) -> Literal["json", "text"]:
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return "text" if isatty is not None and isatty() else "json"
    return fmt


def configure(level: str, fmt: LogFormat, stream: TextIO = sys.stderr) -> str:
    """Send every log record to ``stream``, one line each; returns the format used."""
    chosen = resolve(fmt, stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return chosen


__all__ = ["LOG_FORMATS", "REQUEST_SCOPE", "JsonFormatter", "LogFormat", "configure"]
