"""Structured logging: one JSON object per line on stderr, ids only, never customer data."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.request_context import REQUEST_ID

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


# A last line of defence: code logs ids, never customer data, but a library's message
# or an exception may quote an address or a name field.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PERSONAL_KEYS = {"email", "first_name", "last_name", "firstName", "lastName", "phone", "name"}


def mask(text: str) -> str:
    """Emails masked to their domain: ``a.person@example.com`` -> ``***@example.com``."""
    return _EMAIL.sub(lambda m: "***@" + m.group(0).rsplit("@", 1)[1], text)


def _scrub(key: str, value: Any) -> Any:
    if key in _PERSONAL_KEYS and value is not None:
        return "***"
    return mask(value) if isinstance(value, str) else value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        if (request_id := REQUEST_ID.get()) is not None:
            entry["request_id"] = request_id
        entry.update({k: _scrub(k, v) for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = mask(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log prints query strings, which can carry emails: off by default.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every request URL at INFO; upstream paths can hold identifiers or emails.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
