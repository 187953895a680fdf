"""Time every GraphQL operation into the request-latency histogram, by operation name."""

from __future__ import annotations

import re

from gateway.observability.metrics import REQUEST_SECONDS

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MAX_NAMES = 200  # operation names come from clients: bound the label's cardinality
_seen: set[str] = set()


def _label(name: str | None) -> str:
    if not name:
        return "anonymous"
    if name in _seen:
        return name
    if _NAME.match(name) and len(_seen) < _MAX_NAMES:
        _seen.add(name)
        return name
    return "other"


def observe_operation(name: str | None, seconds: float) -> None:
    REQUEST_SECONDS.labels(_label(name)).observe(seconds)
