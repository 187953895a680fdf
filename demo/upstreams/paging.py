"""Opaque cursors for the samples' pagination and small parameter readers.

A cursor carries the query it continues, as the real APIs' cursors do, so a
client that follows ``next`` needs nothing else from the first request.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson


def encode_cursor(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(state)).decode().rstrip("=")


def decode_cursor(token: str) -> dict[str, Any] | None:
    """The state in a cursor, or None when the token is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        state = orjson.loads(raw)
    except (binascii.Error, ValueError):
        return None
    return state if isinstance(state, dict) else None


def bounded_int(raw: str | None, default: int, maximum: int) -> int | None:
    """An integer query parameter in 1..maximum, the default when absent, None
    when invalid (the caller answers 400/422 as its API does)."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if 1 <= value <= maximum else None
