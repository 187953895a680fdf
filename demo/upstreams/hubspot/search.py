"""HubSpot CRM search semantics: filter groups (OR of ANDs), operators, sorts.

Dates compare as epoch milliseconds whether the filter gives milliseconds or an
ISO string, as HubSpot accepts both; text compares case-insensitively.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

DATE_PROPERTIES = frozenset({"createdate", "lastmodifieddate"})
NUMBER_PROPERTIES = frozenset({"hs_object_id", "hubspot_owner_id"})
MAX_GROUPS = 5
MAX_FILTERS = 6


class SearchError(ValueError):
    """A search request HubSpot would refuse with VALIDATION_ERROR."""


def comparable(name: str, raw: Any) -> Any:
    text = str(raw).strip()
    try:
        if name in DATE_PROPERTIES:
            if text.lstrip("-").isdigit():
                return int(text)
            return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
        if name in NUMBER_PROPERTIES:
            return int(text)
    except ValueError as exc:
        raise SearchError(f"{text!r} is not a valid value for {name}") from exc
    return text.lower()


def _matches(properties: dict[str, str | None], spec: dict[str, Any]) -> bool:
    name = str(spec["propertyName"])
    operator = str(spec.get("operator", "EQ")).upper()
    value = properties.get(name)
    if operator == "HAS_PROPERTY":
        return value is not None
    if operator == "NOT_HAS_PROPERTY":
        return value is None
    if value is None:
        return operator in ("NEQ", "NOT_IN")
    mine = comparable(name, value)
    if operator in ("IN", "NOT_IN"):
        found = mine in {comparable(name, item) for item in spec.get("values") or []}
        return found if operator == "IN" else not found
    if operator == "BETWEEN":
        return bool(comparable(name, spec["value"]) <= mine <= comparable(name, spec["highValue"]))
    if operator == "CONTAINS_TOKEN":
        return str(spec["value"]).strip("*").lower() in str(value).lower()
    other = comparable(name, spec["value"])
    checks = {
        "EQ": mine == other,
        "NEQ": mine != other,
        "LT": mine < other,
        "LTE": mine <= other,
        "GT": mine > other,
        "GTE": mine >= other,
    }
    if operator not in checks:
        raise SearchError(f"Unsupported operator {operator}")
    return bool(checks[operator])


def matches_groups(properties: dict[str, str | None], groups: list[dict[str, Any]]) -> bool:
    """True when any group has all its filters true (no groups: everything matches)."""
    if len(groups) > MAX_GROUPS or any(len(g.get("filters") or []) > MAX_FILTERS for g in groups):
        raise SearchError(f"At most {MAX_GROUPS} filterGroups of {MAX_FILTERS} filters each.")
    if not groups:
        return True
    return any(
        all(_matches(properties, spec) for spec in group.get("filters") or []) for group in groups
    )


def sort_key(sort: str | dict[str, Any]) -> tuple[str, bool]:
    """(property, descending) from either sort form HubSpot accepts."""
    if isinstance(sort, str):
        return sort.lstrip("-"), sort.startswith("-")
    return str(sort["propertyName"]), str(sort.get("direction", "ASCENDING")) == "DESCENDING"


def sortable(properties: dict[str, str | None], name: str) -> tuple[int, Any]:
    value = properties.get(name)
    return (0, "") if value is None else (1, comparable(name, value))
