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
# or an exception may quote an address or a name field. Nothing of an address is kept,
# its domain neither (a person's own domain names them). An "at" is ``@``, its
# full-width form or its percent-encoding (``%40``, ``%2540``: a URL's query). A local
# part is a quoted string, whole and bounded, or the run of anything but a separator
# before the at (Unicode included, RFC 6531; ``? = & / ' .`` are atext, not
# separators), a comment ``(...)`` before the at included; a domain is the rest of that
# run (IDN labels, punycode, more ats), address literals in brackets and comments. Of a
# local part longer than an address's (RFC 5321: 64 octets) the last 64 characters are
# masked. It errs on masking more than an address (a quote or a word glued to it).
_SEPARATORS = r"\s\"<>()\[\],;:"
_AT = "(?:[@\uff20]|%40|%2540)"
_RUN = rf"(?:[^{_SEPARATORS}@\uff20%]|%(?!40|2540))"
_COMMENT = r"\([^()\r\n]{0,64}+\)"
_DOMAIN = rf"(?:[^{_SEPARATORS}]|{_COMMENT}|\[[^\]\s]*+\]?)*+"
# Every pattern reads each character a bounded number of times (possessive, a run tried
# only where it starts, a quoted string only from a quote no backslash escapes, no chain
# of comments to reread from each one): linear time.
_QUOTED = re.compile(rf"(?<!\\)\"(?:[^\"\\\r\n]|\\[^\r\n]){{1,128}}+\"{_AT}{_DOMAIN}")
_ADDRESS = re.compile(rf"(?<![^{_SEPARATORS}])(?P<local>{_RUN}*+(?:{_COMMENT})?){_AT}{_DOMAIN}")
_MAY_HOLD_AN_AT = re.compile("[@\uff20]|%40|%2540")
# A phone number as people write it: nine digits or more, with a leading plus or two
# spaces, dashes or brackets between them (``+33 7 55 21 92 50``, ``(020) 7946-0958``).
# Runs of bare digits are left alone: ids, counts and epoch times are what logs carry.
# At most 40 characters a run: each start is read a bounded number of times (linear).
_PHONE = re.compile(r"(?<![\w.+-])\+?\(?\d[\d .()/-]{7,40}\d(?![\w:])")
_MAY_HOLD_A_PHONE = re.compile(r"\d[\d .()/-]{7,}\d")
_DOTTED_QUAD = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_LOCAL_MAX = 64
# A longer text is cut (a traceback or a message is not this long unless something
# dumps a body or a page): logging is synchronous, on the event loop.
MAX_MASKED_CHARS = 32 * 1024
MASKED = "***@***"
MASKED_PHONE = "***phone***"
_PERSONAL_KEYS = {"email", "first_name", "last_name", "firstName", "lastName", "phone", "name"}


def _masked_address(found: re.Match[str]) -> str:
    return found["local"][:-_LOCAL_MAX] + MASKED


def mask(text: str) -> str:
    """Every email address masked whole: ``ada@example.com`` -> ``***@***``; every phone
    number written as people write one (a plus, or separators between nine digits or
    more) -> ``***phone***``."""
    cut = len(text) - MAX_MASKED_CHARS
    if cut > 0:
        # The cut may split an address: an at put where it falls masks what precedes it
        # as a local part (a quoted one too when a quote may be open).
        head = text[:MAX_MASKED_CHARS]
        at = '"@' if '"' in head[-130:] else "@"
        if _MAY_HOLD_AN_AT.search(head) is None:  # only the cut's own to mask
            return head[:-256] + _mask(head[-256:] + at) + f" [{cut} characters cut]"
        return _mask(head + at) + f" [{cut} characters cut]"
    return _mask(text)


def _mask(text: str) -> str:
    if _MAY_HOLD_A_PHONE.search(text) is not None:
        text = _PHONE.sub(_masked_phone, text)
    if _MAY_HOLD_AN_AT.search(text) is None:
        return text
    return _ADDRESS.sub(_masked_address, _QUOTED.sub(MASKED, text))


def _masked_phone(found: re.Match[str]) -> str:
    run = found.group(0)
    digits = sum(ch.isdigit() for ch in run)
    # A plus, or two breaks between groups at least, or one after a national trunk
    # zero (``07400 123456``): a decimal, a version, a range (``0.123456789``,
    # ``123456789-123456799``) are not phones (a fresh review).
    breaks = sum(ch in " ()-/" for ch in run)
    written = run.startswith("+") or breaks >= 2 or (run[0] == "0" and breaks and digits >= 10)
    if digits < 9 or not written or _DOTTED_QUAD.fullmatch(_dotted_around(found)):
        return run  # a date, an id, an address of a host: not a phone as people write one
    return MASKED_PHONE


def _dotted_around(found: re.Match[str]) -> str:
    """The run of digits and dots the match lies in (``192.168.100`` of a host's
    ``192.168.100.200:5432``)."""
    text, start, end = found.string, found.start(), found.end()
    while start > 0 and (text[start - 1].isdigit() or text[start - 1] == "."):
        start -= 1
    while end < len(text) and (text[end].isdigit() or text[end] == "."):
        end += 1
    return text[start:end]


def _scrub(key: str, value: Any) -> Any:
    if key in _PERSONAL_KEYS and value is not None:
        return "***"
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return mask(value)
    # Lists, dicts (their keys too), bytes, exceptions, objects: masked as JSON shows
    # them, whatever their type.
    try:
        shown = orjson.loads(orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS))
    except (TypeError, orjson.JSONEncodeError):
        return mask(str(value))
    return _scrub_shown(shown)


def _scrub_shown(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [_scrub_shown(item) for item in value]
    if isinstance(value, dict):
        return {mask(key): _scrub(key, item) for key, item in value.items()}
    return value


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
