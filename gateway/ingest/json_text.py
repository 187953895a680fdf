"""Text a webhook's JSON may hold that no database stores.

A NUL character: PostgreSQL's text cannot hold one (an insert holding it fails its whole
transaction) and SQLite's JSON functions read a string only up to it. An unpaired
surrogate escape (``"\\ud800"``): JSON's grammar allows it, but it names no Unicode
character, so no UTF-8 encoder writes it and orjson refuses the whole body. In an ESP
batch either makes its event ``rejected`` by its field (gateway/ingest/esp_payloads.py),
so one bad event does not lose the batch; any other webhook is refused naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

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
    stack = [(value, where)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            if (found := problem(value)) is not None:
                return where, found
            continue
        if isinstance(value, dict):
            pairs: list[tuple[Any, Any]] = list(value.items())
            # A key is no field of its own: its object is named.
            if (bad_key := next(filter(None, map(problem, value)), None)) is not None:
                return where, bad_key
        elif isinstance(value, list):
            pairs = list(enumerate(value))
        else:
            continue
        stack.extend(
            (inner, f"{where}.{name}" if where else str(name)) for name, inner in pairs[::-1]
        )
    return None
