"""A segment's filter: conditions on whitelisted fields joined by ``all`` / ``any``,
parsed from the shape the API takes and stores, checked, and turned into one SQL clause.

    {"all": [{"field": "rfmSegment", "eq": "at_risk"},
             {"field": "purchasePropensity", "gte": 0.4},
             {"any": [{"field": "locale", "in": ["en-GB", "en-IE"]},
                      {"field": "consent.emailMarketing", "eq": true}]}]}

A node is a group (``all`` or ``any`` of nodes) or a condition (``field`` and exactly
one operator). An empty ``all`` matches everyone, an empty ``any`` no one. A condition
on a value the customer does not have (not scored yet, no locale) is false, ``ne``
included, as SQL compares; consent has no missing value (no statement is a no).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import eq, ge, gt, le, lt, ne
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Integer,
    SmallInteger,
    and_,
    false,
    literal,
    not_,
    or_,
    true,
)

from gateway.errors import InvalidInput
from gateway.profiles.contact_points import normalize_email
from gateway.segments.fields import FIELDS, OPERATORS, Field, Kind, Operator, granted

MAX_DEPTH = 5
MAX_CONDITIONS = 100
MAX_VALUES = 1000  # in one ``in``
# In the whole filter: its values are bound parameters of every statement that reads the
# segment, and Postgres's driver takes at most 32,767 of them in one.
MAX_TOTAL_VALUES = 10_000
MAX_TEXT = 320
_EXACT = 2.0**53  # the whole numbers a float holds exactly
_COMPARISONS = {
    Operator.EQ: eq,
    Operator.NE: ne,
    Operator.GT: gt,
    Operator.GTE: ge,
    Operator.LT: lt,
    Operator.LTE: le,
}

Value = str | float | bool | datetime


@dataclass(frozen=True)
class Condition:
    field: Field
    operator: Operator
    values: tuple[Value, ...]  # one, or the list of ``in``
    raw: Any  # as given (normalised), for the stored definition


@dataclass(frozen=True)
class Group:
    every: bool  # all (True) or any (False)
    nodes: tuple[Node, ...]


Node = Group | Condition


@dataclass(frozen=True)
class Definition:
    root: Node

    @property
    def reads_scores(self) -> bool:
        return any(c.field.scores for c in _conditions(self.root))

    @property
    def values(self) -> int:
        """How many values its conditions compare with: about the bound parameters its
        clause takes."""
        return sum(len(c.values) for c in _conditions(self.root))

    def clause(self) -> ColumnElement[bool]:
        return _clause(self.root)

    def as_json(self) -> dict[str, Any]:
        """The stored (and answered) shape: the input's, normalised."""
        return _json(self.root)


def parse(data: Mapping[str, Any]) -> Definition:
    """A checked definition; ``InvalidInput`` names what is wrong and where."""
    counter = [0]
    definition = Definition(_node(data, "filter", 1, counter))
    if definition.values > MAX_TOTAL_VALUES:
        raise _fail("filter", f"at most {MAX_TOTAL_VALUES} values in all; got {definition.values}")
    return definition


def _fail(where: str, message: str) -> InvalidInput:
    return InvalidInput(f"Invalid segment filter at {where}: {message}", field="filter")


def _node(data: Any, where: str, depth: int, counter: list[int]) -> Node:
    if not isinstance(data, Mapping):
        raise _fail(where, "expected an object")
    given = {k: v for k, v in data.items() if v is not None}
    groups = [k for k in ("all", "any") if k in given]
    if (groups and "field" in given) or len(groups) > 1:
        raise _fail(where, "give one of 'all', 'any' or 'field'")
    if groups:
        if depth > MAX_DEPTH:
            raise _fail(where, f"groups nest at most {MAX_DEPTH} deep")
        key = groups[0]
        if len(given) > 1:
            raise _fail(where, f"'{key}' takes nothing beside it")
        items = given[key]
        if not isinstance(items, Sequence) or isinstance(items, str):
            raise _fail(where, f"'{key}' takes a list")
        return Group(
            key == "all",
            tuple(
                _node(item, f"{where}.{key}[{i}]", depth + 1, counter)
                for i, item in enumerate(items)
            ),
        )
    if "field" not in given:
        raise _fail(where, "give one of 'all', 'any' or 'field'")
    counter[0] += 1
    if counter[0] > MAX_CONDITIONS:
        raise _fail(where, f"at most {MAX_CONDITIONS} conditions")
    return _condition(given, where)


def _condition(given: Mapping[str, Any], where: str) -> Condition:
    name = given["field"]
    field = FIELDS.get(name) if isinstance(name, str) else None
    if field is None:
        known = ", ".join(FIELDS)
        raise _fail(where, f"unknown field {str(name)[:100]!r}; known fields: {known}")
    operators = [k for k in given if k != "field"]
    unknown = [k for k in operators if k not in Operator.__members__.values()]
    if unknown:
        bad = unknown[0][:40]
        raise _fail(where, f"unknown operator {bad!r}; use eq, ne, gt, gte, lt, lte, in")
    if len(operators) != 1:
        raise _fail(where, f"give exactly one operator for {name!r}")
    operator = Operator(operators[0])
    if operator not in OPERATORS[field.kind]:
        allowed = ", ".join(sorted(OPERATORS[field.kind]))
        raise _fail(where, f"{name!r} ({field.kind.value}) takes {allowed}, not {operator.value}")
    raw = given[operator.value]
    if operator is Operator.IN:
        if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
            raise _fail(where, "'in' takes a non-empty list")
        if len(raw) > MAX_VALUES:
            raise _fail(where, f"'in' takes at most {MAX_VALUES} values")
        values = tuple(_value(field, v, where) for v in raw)
        shown: Any = [_shown(v) for v in values]
    else:
        values = (_value(field, raw, where),)
        shown = _shown(values[0])
    return Condition(field, operator, values, shown)


def _value(field: Field, value: Any, where: str) -> Value:
    kind = field.kind
    if kind is Kind.NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(where, f"{field.name!r} takes a number")
        try:
            number = float(value)  # a 400-digit integer literal has no float
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise _fail(where, f"{field.name!r} takes a finite number")
        return number
    if kind is Kind.BOOLEAN:
        if not isinstance(value, bool):
            raise _fail(where, f"{field.name!r} takes true or false")
        return value
    if not isinstance(value, str):
        raise _fail(where, f"{field.name!r} takes a string")
    if kind is Kind.TIME:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise _fail(where, f"{field.name!r} takes an ISO 8601 time with an offset")
        return moment
    if kind is Kind.CHOICE and value not in field.choices:
        raise _fail(where, f"{field.name!r} is one of {', '.join(field.choices)}")
    if len(value) > MAX_TEXT:
        raise _fail(where, f"{field.name!r} values are at most {MAX_TEXT} characters")
    if field.name == "email":
        try:
            return normalize_email(value)  # stored normalised: compared the same way
        except ValueError as exc:
            raise _fail(where, f"'email': {exc}") from None
    return value


def _shown(value: Value) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    # Whole as an integer while a float holds it exactly: 1e30 as an integer is past
    # the 64 bits the JSON encoder writes (every answer with the definition failed).
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT:
        return int(value)
    return value


def _bounds(column: ColumnElement[Any]) -> tuple[int, int]:
    """The integers an integer column holds: a bound outside them, bound as one, is
    the driver's error (asyncpg's int16 or int32 range) or an overflow on SQLite."""
    kind = column.type
    bits = 15 if isinstance(kind, SmallInteger) else 63 if isinstance(kind, BigInteger) else 31
    return -(2**bits), 2**bits - 1


def _conditions(node: Node) -> list[Condition]:
    if isinstance(node, Condition):
        return [node]
    return [c for child in node.nodes for c in _conditions(child)]


def _clause(node: Node) -> ColumnElement[bool]:
    if isinstance(node, Group):
        parts = [_clause(child) for child in node.nodes]
        if not parts:
            return true() if node.every else false()
        return and_(*parts) if node.every else or_(*parts)
    return _consented(node)


def _consented(condition: Condition) -> ColumnElement[bool]:
    """``_compare``, for behaviour read as 0 without consent (``Field.hidden``): its stored
    value with the consent (an EXISTS Postgres joins page by page), or 0 without it."""
    stored = _compare(condition)
    purpose = condition.field.hidden
    if purpose is None:
        return stored
    if not _holds(condition, 0.0):
        return and_(granted(purpose), stored)
    known = condition.field.expression.is_not(None)  # not scored: no value either way
    return and_(known, or_(~granted(purpose), stored))


def _holds(condition: Condition, number: float) -> bool:
    """Whether ``number`` itself meets the condition."""
    if condition.operator is Operator.IN:
        return number in condition.values
    return bool(_COMPARISONS[condition.operator](number, condition.values[0]))


def _compare(condition: Condition) -> ColumnElement[bool]:
    field, operator, values = condition.field, condition.operator, condition.values
    if field.kind is Kind.BOOLEAN:
        # The expression is itself a truth (an EXISTS): compare by choosing it or not.
        expression: ColumnElement[bool] = field.expression
        wanted = set(values)
        if operator is Operator.NE:
            wanted = {not values[0]}
        if wanted == {True, False}:
            return true()
        return expression if wanted == {True} else not_(expression)
    column = field.expression
    value: Any = values[0]
    if field.kind is Kind.NUMBER and isinstance(column.type, Integer):
        # Whole numbers bind as integers: an integer column compared with a float is
        # cast per row (to numeric on Postgres), which no index serves. An integer
        # bind would truncate 1.5 to 1, though: a fraction is compared as a double,
        # and is equal to no integer; so is a whole number the column cannot hold.
        low, high = _bounds(column)
        whole = [
            int(v) for v in values if isinstance(v, float) and v.is_integer() and low <= v <= high
        ]
        if operator is Operator.IN:
            return column.in_(whole) if whole else false()
        if whole:
            value = whole[0]
        elif operator is Operator.EQ:
            return false()
        elif operator is Operator.NE:
            return column.is_not(None)
        else:
            value = literal(value, Float())
    if operator is Operator.IN:
        return column.in_(values)
    compared: ColumnElement[bool] = _COMPARISONS[operator](column, value)
    return compared


def _json(node: Node) -> dict[str, Any]:
    if isinstance(node, Group):
        return {"all" if node.every else "any": [_json(child) for child in node.nodes]}
    return {"field": node.field.name, node.operator.value: node.raw}
