"""Spans leave the process without customer data: one filter in front of every exporter.

What the instrumentations record can carry it: a URL's path (``/api/v1/users/{email}/
profile``, HubSpot's contact by e-mail, Segment's ``user_id:…``) and query (Shopify's
``query=email:…``, a GET ``/graphql``'s variables), an exception's message (a database
error quotes the row). The gateway's own spans carry ids, counts and route templates
only. Before export, then:

- URL attributes keep scheme, host, port and path; each path segment that is not a
  plain word or short number becomes ``{redacted}``; queries are dropped;
- span names that hold a path are masked the same way;
- exception events keep ``exception.type`` only; a status description survives only as
  a code (``UPSTREAM_TIMEOUT``), never as free text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status

__all__ = ["RedactingExporter", "mask_path", "redact"]

# A segment kept as is: a word of the API (``contacts``, ``orders.json``, ``v3``,
# ``{id}``) or a short number; ids long enough to be a phone number are masked too.
_PLAIN = re.compile(r"^[A-Za-z0-9_.{}-]{1,64}$")
_LONG_NUMBER = re.compile(r"\d{7,}")
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_PATH_KEYS = frozenset({"http.target", "url.path"})
_URL_KEYS = frozenset({"http.url", "url.full"})
_DROPPED_KEYS = frozenset({"url.query", "exception.message", "exception.stacktrace"})
REDACTED = "{redacted}"


def mask_path(path: str) -> str:
    """``path`` without its query, every segment that could be customer data masked."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    return "/".join(
        segment
        if not segment or (_PLAIN.match(segment) and not _LONG_NUMBER.search(segment))
        else REDACTED
        for segment in path.split("/")
    )


def _mask_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.scheme else ""
    return origin + mask_path(parts.path)


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if key in _DROPPED_KEYS:
            continue
        if key in _URL_KEYS and isinstance(value, str):
            value = _mask_url(value)
        elif key in _PATH_KEYS and isinstance(value, str):
            value = mask_path(value)
        clean[key] = value
    return clean


def _name(name: str) -> str:
    method, space, rest = name.partition(" ")
    if rest.startswith("/"):
        return f"{method}{space}{mask_path(rest)}"
    if name.startswith("/"):
        return mask_path(name)
    return name


def _events(events: Sequence[Event]) -> list[Event]:
    return [Event(e.name, _attributes(e.attributes), e.timestamp) for e in events]


def _status(status: Status) -> Status:
    description = status.description
    if description is None or _CODE.match(description):
        return status
    return Status(status.status_code)


def redact(span: ReadableSpan) -> ReadableSpan:
    """A copy of ``span`` fit to leave the process."""
    return ReadableSpan(
        name=_name(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_attributes(span.attributes),
        events=_events(span.events),
        links=span.links,
        kind=span.kind,
        status=_status(span.status),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingExporter(SpanExporter):
    """Hands ``exporter`` redacted copies of the spans."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.exporter.export([redact(span) for span in spans])

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)
