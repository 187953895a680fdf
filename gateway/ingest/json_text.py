"""Text a webhook's JSON may hold that no database stores.

A NUL character: PostgreSQL's text cannot hold one (an insert holding it fails its whole
transaction) and SQLite's JSON functions read a string only up to it. An unpaired
surrogate escape (``"\\ud800"``): JSON's grammar allows it, but it names no Unicode
character, so no UTF-8 encoder writes it and orjson refuses the whole body. In an ESP
batch either makes its event ``rejected`` by its field (gateway/ingest/esp_payloads.py),
so one bad event does not lose the batch; any other webhook holding either is
refused naming the field (``single_json``).

``PayloadError`` is what every webhook's parser raises for a body it cannot accept:
``parse_json`` for text that is no JSON, ``payload_error`` for a value that is not what
the source sends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, ValidationError

NUL = "a NUL character"
NOT_UNICODE = "text that is not valid Unicode (an unpaired surrogate escape)"
NOT_JSON = "the body is not valid JSON"
_SURROGATE = re.compile("[\ud800-\udfff]")
# A string's \uD800-\uDFFF escape, after an even run of backslashes (``\\ud800`` is an
# escaped backslash and the letters ``ud800``): a high and a low one together (a pair, one
# character), else one alone, as a JSON reader pairs them, left to right.
_SURROGATE_ESCAPE = re.compile(
    rb"(?<!\\)((?:\\\\)*)"
    rb"(\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[dD][89a-fA-F][0-9a-fA-F]{2})"
)


def bad_text_at(value: Any, where: str) -> tuple[str, str] | None:
    """Where in a parsed JSON value a string (or a key) holds a NUL or an unpaired
    surrogate, and which (the field and the reason), or None."""
    return _text_at(value, where, _problem)


def batch_json(body: bytes) -> tuple[Any, Any | None] | None:
    """An ESP batch as JSON: (the batch, None) from orjson, the fast path. When orjson
    refused it only for unpaired surrogates: (the batch with each replaced by U+FFFD, so
    its events validate as any other's; the batch as sent, for ``bad_text_at`` to find
    them in). None: the body is not JSON."""
    try:
        return orjson.loads(body), None
    except orjson.JSONDecodeError:
        return _lenient(body)


def single_json(body: bytes) -> tuple[Any, tuple[str, str | None, int] | None]:
    """A single webhook's body as JSON, and why it cannot be taken when it cannot (as
    ``refusal``): not JSON (400), or text no database stores (422 naming the field): an
    unpaired surrogate, or a NUL (PostgreSQL refused the event's insert, a 500 the
    sender retried for ever)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, refusal(body)
    # JSON holds a NUL only escaped: most bodies skip the walk.
    if b"\\u0000" in body and (found := _text_at(data, "", _nul)) is not None:
        where = found[0] or None
        return None, (f"{where or 'body'}: {NUL}", where, 422)
    return data, None


def _nul(text: str) -> str | None:
    return NUL if "\x00" in text else None


def refusal(body: bytes) -> tuple[str, str | None, int]:
    """Why orjson refused a single webhook's body, as a ``PayloadError``'s reason, field
    and status: 422 naming the field of an unpaired surrogate (the body is JSON, that
    text is not Unicode), else 400, not JSON. One object (or HubSpot's batch, refused
    whole for any bad event) has no other events to keep."""
    read = _lenient(body)
    found = None if read is None else _text_at(read[1], "", _unpaired)
    if found is None:
        return NOT_JSON, None, 400
    where = found[0] or None  # "": the body itself is the string, or one of its keys
    return f"{where or 'body'}: {NOT_UNICODE}", where, 422


def _lenient(body: bytes) -> tuple[Any, Any] | None:
    """``body`` read with its unpaired surrogate escapes: (each replaced by U+FFFD, as
    sent), or None when anything else is wrong with it (NaN, a BOM, a number out of
    range, bytes that are not UTF-8: Python's reader takes them all, orjson none)."""
    try:
        cleaned = orjson.loads(_SURROGATE_ESCAPE.sub(_unpaired_replaced, body))
        # Python's reader keeps them (as lone surrogates), to find them by: its C
        # scanner stops at the recursion limit (a 400 then), orjson at 1,024 levels.
        return cleaned, json.loads(body)
    except (ValueError, RecursionError):
        return None


def _unpaired_replaced(match: re.Match[bytes]) -> bytes:
    escape = match[2]
    return match[1] + (escape if len(escape) == 12 else rb"\ufffd")


def _problem(text: str) -> str | None:
    if "\x00" in text:
        return NUL
    return _unpaired(text)


def _unpaired(text: str) -> str | None:
    # JSON's stdlib reading joins a valid pair into one character: any left is unpaired.
    return NOT_UNICODE if not text.isascii() and _SURROGATE.search(text) else None


def _text_at(
    value: Any, where: str, problem: Callable[[str], str | None]
) -> tuple[str, str] | None:
    # A stack, not recursion: orjson reads 1,024 levels deep, past Python's own limit.
    # Each entry holds its parent's path and its own name, joined only when it is read
    # and only for text and containers: a path made for every child up front held
    # ~2 x depth characters per number of a wide list deep down (610 MB for a 0.6 MB
    # body of 300,000 zeros 900 levels down).
    stack: list[tuple[Any, str | None, Any]] = [(value, None, where)]
    while stack:
        value, parent, name = stack.pop()
        here = name if parent is None else f"{parent}.{name}" if parent else str(name)
        if isinstance(value, str):
            if (found := problem(value)) is not None:
                return here, found
            continue
        if isinstance(value, dict):
            pairs: Iterable[tuple[Any, Any]] = value.items()
            # A key is no field of its own: its object is named.
            if (bad_key := next(filter(None, map(problem, value)), None)) is not None:
                return here, bad_key
        elif isinstance(value, list):
            pairs = enumerate(value)
        else:  # a number, a boolean or null at the root (below, only these are pushed)
            continue
        children = [(inner, here, key) for key, inner in pairs if isinstance(inner, _WALKED)]
        stack.extend(reversed(children))
    return None


_WALKED = (str, dict, list)


def not_boolean(value: object) -> object:
    """A number that JSON's ``true`` or ``false`` is not: pydantic's lax int takes them
    as 1 and 0 (a time "at" 1970's first second). For a ``BeforeValidator``."""
    if isinstance(value, bool):
        raise ValueError("a number, not true or false")
    return value


# The times a source's event may carry: a time outside them is no event's (year 1 with
# +14:00 is year 0 in UTC, 9999-12-31 with -14:00 year 10000: neither converts, and a
# Postgres row of year 10000 is one asyncpg cannot read back).
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
LATEST_MS = int(LATEST.timestamp() * 1000) - 1


def event_time(value: datetime) -> datetime:
    """A source's time in UTC (one without a zone is UTC), between 1900 and 2200. For an
    ``AfterValidator``: out of range, the field is refused (a 422 naming it, a stream
    message's dead letter) instead of a 500 on every retry."""
    try:
        found = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        found = None
    if found is None or not EARLIEST <= found < LATEST:
        raise ValueError("a time between 1900 and 2200")
    return found


EventTime = Annotated[datetime, AfterValidator(event_time)]


def decimal_text(value: str) -> str:
    """An amount as a source spells it (Shopify's ``"199.00"``), kept as text, if it is
    a finite decimal: ``"NaN"`` or ``"1e400"`` was stored, and every score of its
    customer answered an error after the next build. For an ``AfterValidator``."""
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or abs(amount) >= 10**15:
        raise ValueError("a decimal amount, such as 199.00")
    return value


DecimalText = Annotated[str, AfterValidator(decimal_text)]


class PayloadError(Exception):
    """A body that cannot be accepted; ``field`` is a dotted path, ``status`` 400 or 422."""

    def __init__(self, reason: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.status = status


def parse_json(body: bytes) -> Any:
    """The body as JSON, or a 400 that says it is not (a 422 for text no database stores)."""
    data, refused = single_json(body)
    if refused is not None:
        raise PayloadError(*refused)
    return data


def payload_error(exc: ValidationError) -> PayloadError:
    """A model's refusal as the webhook's: the first error's message and location only
    (pydantic's ``input`` would echo customer data)."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or None
    return PayloadError(f"{where or 'body'}: {error['msg']}", where)
