"""Schema drift: a well-formed document whose shape is no longer the contract's.

What the ``schema_change`` knob serves. The drift mimics an upstream that was
redeployed with another serializer: every key renamed (``first_name`` becomes
``FirstName``, ``id`` becomes ``Id``) and scalar types swapped (numbers become
strings, numeric strings become numbers, booleans become "yes"/"no"). A client
that validates what it receives notices; one that trusts it breaks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

_WORD = re.compile(r"[A-Za-z][a-z0-9]*|[A-Z]+(?![a-z])")


def pascal_case(name: str) -> str:
    words = _WORD.findall(name.replace("_", " ").replace("-", " "))
    return "".join(word[:1].upper() + word[1:] for word in words) or name.upper()


def _drift(value: Any) -> Any:
    if isinstance(value, dict):
        return {pascal_case(key): _drift(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_drift(item) for item in value]
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            return float(value) if "." in value else value
        except ValueError:
            return value
    return value


def drift_json(body: bytes) -> bytes:
    """The same data as ``body`` in a drifted shape; non-JSON passes unchanged."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    return orjson.dumps(_drift(document))


def _retyped(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return "yes" if value else 0
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return len(value)  # text becomes a number
    return str(value)  # an object or a list becomes text


def _partly(value: Any, renames: Mapping[str, str], retypes: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {
            renames.get(key, key): _retyped(item)
            if key in retypes
            else _partly(item, renames, retypes)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_partly(item, renames, retypes) for item in value]
    return value


def drift_fields(body: bytes, renames: Mapping[str, str], retypes: Iterable[str]) -> bytes:
    """``body`` with these keys renamed and these keys' values of another type, wherever
    they occur; the rest as it was (an upstream that changed one field)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    return orjson.dumps(_partly(document, renames, frozenset(retypes)))


def truncate(body: bytes) -> bytes:
    """What a connection cut mid-body leaves: never a complete document."""
    return body[: max(1, len(body) // 2)] if len(body) > 1 else b""
