"""Structured logging: one JSON object per line on stderr, ids only, never customer data."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace

from gateway.observability.log_repeats import RepeatSummary
from gateway.observability.request_context import REQUEST_ID

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


# A last line of defence: code logs ids, never customer data, but a library's message
# or an exception may quote an address or a name field. Any address is masked whole,
# its domain too (a person's own domain names them): a local part is a quoted string
# (spaces and escaped quotes allowed) or a run of anything but a separator, Unicode
# included (RFC 6531); a domain is such a run (IDN labels, punycode) or an address
# literal in brackets. It errs on masking more than an address (a quote or a word
# glued to it), never less.
_SEPARATORS = r"\s@\"<>()\[\],;:"
_DOMAIN = rf"@(?:\[[^\]\s]{{0,64}}\]|[^{_SEPARATORS}]+)"
# A match starts only where a run starts (after a separator, or a quote), reads at most
# 256 parts of a local part (RFC 5321 allows 64 octets) and never backtracks into them
# (possessive): a long line without an address costs linear time.
_EMAIL = re.compile(
    rf"(?<![^{_SEPARATORS}])"
    rf"(?:\"(?:[^\"\\\r\n]|\\.){{1,128}}\"|[^{_SEPARATORS}]){{1,256}}+{_DOMAIN}"
)
# What is left of a longer one (or of one an odd quote hid): its domain, wherever an @
# is glued to a word or a quote.
_GLUED_DOMAIN = re.compile(rf"(?<=[^\s@<>()\[\],;:]){_DOMAIN}")
MASKED = "***@***"
_PERSONAL_KEYS = {"email", "first_name", "last_name", "firstName", "lastName", "phone", "name"}


def mask(text: str) -> str:
    """Every email address masked whole: ``ada@example.com`` -> ``***@***``."""
    if "@" not in text:
        return text
    return _GLUED_DOMAIN.sub("@***", _EMAIL.sub(MASKED, text))


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
            "pid": record.process,
        }
        # A summary of repeated errors spans many requests: it names none.
        if (request_id := REQUEST_ID.get()) is not None and not hasattr(record, "repeated"):
            entry["request_id"] = request_id
            # With tracing on, the trace to open from this line (off: never valid).
            traced = trace.get_current_span().get_span_context()
            if traced.is_valid:
                entry["trace_id"] = f"{traced.trace_id:032x}"
                entry["span_id"] = f"{traced.span_id:016x}"
        entry.update({k: _scrub(k, v) for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = mask(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, *, repeat_interval_s: float = 10.0) -> RepeatSummary:
    """JSON on stderr for this process, uvicorn's own loggers included; answers the
    filter that summarises repeated errors (to flush at shutdown)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    repeats = RepeatSummary(handler.handle, interval_s=repeat_interval_s)
    handler.addFilter(repeats)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's loggers have handlers of their own (plain text) when uvicorn configured
    # them (`uvicorn --log-level`): route them through the one JSON handler.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = []
        uvicorn_logger.propagate = True
    # uvicorn's access log prints query strings, which can carry emails: off by default.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every request URL at INFO; upstream paths can hold identifiers or emails.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    return repeats


def configure_worker_logging(level: str, *, repeat_interval_s: float) -> RepeatSummary | None:
    """Called by the app factory, so that each worker process logs JSON: uvicorn's
    workers (``serve --workers N``) are fresh interpreters that never ran the parent's
    ``configure_logging``. A process that already logs JSON keeps its handler; one whose
    root logger someone else configured (a test harness, an application embedding the
    gateway) is left alone (None)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler.formatter, JsonFormatter):
            return next((f for f in handler.filters if isinstance(f, RepeatSummary)), None)
    if root.handlers:
        return None
    return configure_logging(level, repeat_interval_s=repeat_interval_s)
