"""Time every GraphQL operation into the request-latency histogram, by operation name,
and count the operations that answered errors, by operation and error code (each code
once per operation: the error-rate alert's numerator)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from graphql import GraphQLError

from gateway.observability.metrics import OPERATION_ERRORS, REQUEST_SECONDS

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


def observe_operation(
    name: str | None, seconds: float, errors: Iterable[GraphQLError] = ()
) -> None:
    label = _label(name)
    REQUEST_SECONDS.labels(label).observe(seconds)
    codes = {str((error.extensions or {}).get("code") or "INTERNAL") for error in errors}
    for code in codes:
        OPERATION_ERRORS.labels(label, code).inc()
