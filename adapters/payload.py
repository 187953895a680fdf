"""Upstream payloads as private pydantic models: where a changed schema is caught.

Each adapter describes the parts of an answer it reads as ``Payload`` models (required
keys required, known extra keys listed) and parses through ``parse_json`` or
``parse_object``. A body that is not JSON, or whose required parts no longer fit,
becomes ``UpstreamBadResponse`` whose message names the failing locations and error
kinds only: pydantic's own message quotes input values, i.e. customer data, so it is
neither put in our message nor chained into the traceback.

Schema drift is reported as it is met, by field path and kind, never with a value:

- ``unknown``: a key the model neither reads nor lists in ``unread`` (a new or renamed
  field); the answer is served as before.
- ``missing``: a declared key absent from an object of a ``complete`` model (an API
  that sends every field, null when empty) or a required key absent (the answer fails).
- ``type``: a value of another type. An optional field that changed type is dropped
  (its default serves) and the rest of the answer is served; a required one fails it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar, get_args

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from adapters.transport.telemetry import NO_TELEMETRY, Telemetry

from .errors import UpstreamBadResponse

__all__ = ["Payload", "checked", "describe", "drifts", "parse_json", "parse_object"]

P = TypeVar("P", bound=BaseModel)
_SALVAGE_ROUNDS = 5  # type changes repaired per answer before it is given up on


class Payload(BaseModel):
    """Base of upstream-shaped models; strict about types, keeping additions to report."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    # Keys the API sends that the adapter does not read: not drift.
    unread: ClassVar[frozenset[str]] = frozenset()
    # Whether the API always sends every declared key (null when empty): absence is drift,
    # except for the keys in ``may_omit`` (a last page's missing ``paging``).
    complete: ClassVar[bool] = True
    may_omit: ClassVar[frozenset[str]] = frozenset()
    # A free-form object (custom traits): no key is unknown.
    open: ClassVar[bool] = False


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


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def drifts(model: BaseModel, path: str = "") -> Iterator[tuple[str, str]]:
    """``(path, kind)`` for every difference between a parsed answer and its models
    (lists read as ``name[]``); repeats across the items of a list are not removed."""
    cls = type(model)
    if isinstance(model, Payload):
        if not model.open:
            for key in model.model_extra or ():
                if key not in model.unread:
                    yield _join(path, key), "unknown"
        if model.complete:
            for name in cls.model_fields.keys() - model.model_fields_set - model.may_omit:
                yield _join(path, name), "missing"
    for name in model.model_fields_set & _nesting(cls):
        yield from _nested(getattr(model, name), _join(path, name))


@functools.cache
def _nesting(cls: type[BaseModel]) -> frozenset[str]:
    """The fields of ``cls`` whose values may hold models: only they can hide drift
    below. Walking the others (a hundred events' times and texts per Segment answer)
    cost a tenth of a send's CPU."""
    return frozenset(
        name for name, field in cls.model_fields.items() if _holds_model(field.annotation)
    )


def _holds_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_model(arg) for arg in get_args(annotation))


def _nested(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, BaseModel):
        yield from drifts(value, path)
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, BaseModel):
                yield from drifts(item, path + "[]")


def _report(telemetry: Telemetry, upstream: str, found: Iterator[tuple[str, str]]) -> None:
    # Once per answer: a hundred contacts with the same new key are one drift seen.
    for path, kind in sorted(set(found)):
        telemetry.drift(upstream, path, kind)


def _located(data: Any, loc: Sequence[str | int]) -> tuple[Any, str | int, str] | None:
    """The object holding the key an error points at, that key, and its path; None when
    the location is not in the data (an error about a missing key)."""
    found: tuple[Any, str | int, str] | None = None
    holder, path = data, ""
    for part in loc:
        if isinstance(holder, list) and isinstance(part, int) and 0 <= part < len(holder):
            step = path + "[]"
        elif isinstance(holder, dict) and isinstance(part, str) and part in holder:
            step = _join(path, part)
        else:
            # Past the data: a union member's tag (the value above is the one at fault),
            # or the key is absent.
            return found
        found = (holder, part, step)
        holder, path = holder[part], step
    return found


def _salvage(
    upstream: str,
    operation: str,
    model: type[P],
    data: Any,
    exc: ValidationError,
    telemetry: Telemetry,
    *,
    from_json: bool,
) -> P:
    """Drop optional fields whose type changed until the rest parses; anything else
    (a required key missing or changed) fails the answer, as before drift was counted."""
    dropped_paths: set[str] = set()
    for _ in range(_SALVAGE_ROUNDS):
        seen: set[tuple[str, str]] = set()
        fatal = False
        dropped: list[tuple[Any, str | int]] = []
        for error in exc.errors(include_input=False, include_url=False, include_context=False):
            where = _located(data, error["loc"])
            if error["type"] == "missing" or where is None:
                fatal = True
                loc = ".".join("[]" if isinstance(p, int) else str(p) for p in error["loc"])
                path = loc.replace(".[]", "[]") or "(root)"
                if path not in dropped_paths:  # a required field whose type changed
                    seen.add((path, "missing"))
                continue
            holder, key, path = where
            seen.add((path, "type"))
            dropped.append((holder, key))
            dropped_paths.add(path)
        _report(telemetry, upstream, iter(seen))
        if fatal or not dropped:
            break
        for holder, key in dropped:
            if isinstance(holder, dict):
                holder.pop(key, None)
        try:
            # Read again as it was read first: JSON's strict mode takes a time as text.
            parsed = (
                model.model_validate_json(orjson.dumps(data))
                if from_json
                else model.model_validate(data)
            )
        except ValidationError as again:
            exc = again
            continue
        if isinstance(parsed, BaseModel):  # a dropped field is not missing as well
            rest = ((p, k) for p, k in drifts(parsed) if p not in dropped_paths)
            _report(telemetry, upstream, rest)
        return parsed
    raise UpstreamBadResponse(upstream, f"{operation}: {describe(exc)}") from None


def parse_json(
    upstream: str,
    operation: str,
    model: type[P],
    content: bytes,
    telemetry: Telemetry = NO_TELEMETRY,
) -> P:
    try:
        parsed = model.model_validate_json(content)
    except ValidationError as exc:
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamBadResponse(upstream, f"{operation}: {describe(exc)}") from None
        return _salvage(upstream, operation, model, data, exc, telemetry, from_json=True)
    if telemetry is not NO_TELEMETRY:
        _report(telemetry, upstream, drifts(parsed))
    return parsed


def parse_object(
    upstream: str,
    operation: str,
    model: type[P],
    data: Any,
    telemetry: Telemetry = NO_TELEMETRY,
) -> P:
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        # Repaired on a copy: zeep's objects (SOAP) are the caller's.
        return _salvage(
            upstream, operation, model, copy.deepcopy(data), exc, telemetry, from_json=False
        )
    if telemetry is not NO_TELEMETRY:
        _report(telemetry, upstream, drifts(parsed))
    return parsed


@contextmanager
def checked(upstream: str, operation: str) -> Iterator[None]:
    """Turn a record that will not validate (an id gone empty, a naive time) into
    ``UpstreamBadResponse``, like a payload that will not parse."""
    try:
        yield
    except ValidationError as exc:
        raise UpstreamBadResponse(upstream, f"{operation}: {describe(exc)}") from None
