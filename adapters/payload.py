"""Upstream payloads as private pydantic models: where a changed schema is caught.

Each adapter describes the parts of an answer it reads as ``Payload`` models (extra
keys ignored, required keys required) and parses through ``parse_json`` or
``parse_object``. A body that is not JSON, or whose shape no longer fits, becomes
``UpstreamBadResponse`` whose message names the failing locations and error kinds
only: pydantic's own message quotes input values, i.e. customer data, so it is
neither put in our message nor chained into the traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import UpstreamBadResponse

__all__ = ["Payload", "checked", "describe", "parse_json", "parse_object"]

P = TypeVar("P", bound=BaseModel)


class Payload(BaseModel):
    """Base of upstream-shaped models; strict about types, tolerant of additions."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


def describe(exc: ValidationError, *, limit: int = 3) -> str:
    """Where and how a payload failed, without any of its values."""
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    if any(error["type"] == "json_invalid" for error in errors):
        return "body is not valid JSON"
    parts = [
        f"{'.'.join(str(p) for p in error['loc']) or '(root)'}: {error['type']}"
        for error in errors[:limit]
    ]
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "unexpected shape: " + "; ".join(parts) + more


def parse_json(upstream: str, operation: str, model: type[P], content: bytes) -> P:
    try:
        return model.model_validate_json(content)
    except ValidationError as exc:
        raise UpstreamBadResponse(upstream, f"{operation}: {describe(exc)}") from None


def parse_object(upstream: str, operation: str, model: type[P], data: Any) -> P:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UpstreamBadResponse(upstream, f"{operation}: {describe(exc)}") from None


@contextmanager
def checked(upstream: str, operation: str) -> Iterator[None]:
    """Turn a record that will not validate (an id gone empty, a naive time) into
    ``UpstreamBadResponse``, like a payload that will not parse."""
    try:
        yield
    except ValidationError as exc:
        raise UpstreamBadResponse(upstream, f"{operation}: {describe(exc)}") from None
