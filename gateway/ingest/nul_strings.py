"""Where a parsed JSON value holds a NUL character: PostgreSQL's text cannot store one
(an insert holding it fails its whole transaction) and SQLite's JSON functions read a
string only up to it, so a webhook's event carrying one is refused by its field."""

from __future__ import annotations

from typing import Any


def nul_at(value: Any, where: str) -> str | None:
    """Where in a parsed JSON value a string (or a key) holds a NUL, or None."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    pairs = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for name, inner in pairs:
        if isinstance(name, str) and "\x00" in name:
            return where
        found = nul_at(inner, f"{where}.{name}")
        if found is not None:
            return found
    return None
