"""An object's planned completion: its selected fields read (an attribute, or a plain
method called directly with the operation's arguments) and completed in one loop, as
graphql-core would complete them, without its per-field path, resolve info, argument
coercion and type dispatch.

A field's value is completed here only when it is ordinary: a leaf that coerces, a
null where the field is nullable, an object or a short list of objects whose own
fields are plain attributes that complete the same way. Anything else (an exception,
a null where the type forbids it, a value that does not coerce, a long list) stops the
loop: ``planned`` answers a ``Partial``, the fields completed so far and the value (or
exception) in hand for the field that stopped it, and graphql-core's own path completes
the object from there (``AcyclicExecutionContext.resume``): the same errors, at the same
paths, in the same order, and no method ever called twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from graphql import GraphQLLeafType
from graphql.pyutils import Undefined

# Longer lists of a planned field go graphql-core's way, completed in slices of time
# (slices.py): a planned object is completed in one go.
MAX_PLANNED_ITEMS = 64


class Nested(NamedTuple):
    """How an object value (or a list of them) completes: by ``plan``, whose steps are
    all attribute reads (completing one again on graphql-core's path repeats no call)."""

    is_list: bool
    item_nullable: bool  # a list's items may be null
    plan: Plan


class Step(NamedTuple):
    """One selected field of a planned object."""

    name: str  # the response name (an alias, or the field's name)
    read: Callable[[Any], Any]  # the field's value from its parent
    leaf: GraphQLLeafType | None  # a leaf's type, coerced; else ``nested`` completes it
    nullable: bool
    nested: Nested | None


Plan = list[Step]


class Partial(NamedTuple):
    """Where a planned completion stopped: the fields completed before ``at`` and the
    value (``raised``: the exception) the field at ``at`` answered."""

    source: Any
    results: dict[str, Any]
    at: int
    value: Any
    raised: bool


def odd(value: Any) -> bool:
    """Whether a value a leaf's coercion accepted is one graphql-core does not coerce: an
    exception returned (not raised), which it reports as the field's error, or an
    awaitable, which it awaits first. A String coerces an object of any class not
    built in (an exception of ours, an asyncio future) by ``str()``: the plan answered
    the exception's message where graphql-core answered null and the error. Asked only
    when coercion made a new value (a str, an int or a bool come back as themselves),
    and decided once per class (~0.1 us a value: a send's 5,000 event times)."""
    kind = type(value)
    found = _ODD_KINDS.get(kind)
    if found is None:
        found = _ODD_KINDS[kind] = issubclass(kind, Exception) or hasattr(kind, "__await__")
    return found


# Per class of value met: a handful (datetime, date, enums, Decimal), each looked at once.
_ODD_KINDS: dict[type, bool] = {}
_MISS: Any = object()  # a nested value the plan does not complete


def planned(plan: Plan, source: Any) -> dict[str, Any] | Partial:
    """The object's fields completed by ``plan``, or where that stopped."""
    results: dict[str, Any] = {}
    for index, (name, read, leaf, nullable, nested) in enumerate(plan):
        try:
            value = read(source)
        except Exception as error:  # noqa: BLE001 - graphql-core's path reports it
            return Partial(source, results, index, error, True)
        if value is None:
            if not nullable:
                return Partial(source, results, index, value, False)
            results[name] = None
        elif leaf is not None:
            try:
                coerced = leaf.coerce_output_value(value)
            except Exception:  # noqa: BLE001 - graphql-core's path reports it
                return Partial(source, results, index, value, False)
            if coerced is None or coerced is Undefined or (coerced is not value and odd(value)):
                return Partial(source, results, index, value, False)
            results[name] = coerced
        else:
            assert nested is not None
            completed = _nested(nested, value)
            if completed is _MISS:
                return Partial(source, results, index, value, False)
            results[name] = completed
    return results


def _nested(nested: Nested, value: Any) -> Any:
    plan = nested.plan
    if not nested.is_list:
        completed = planned(plan, value)
        return completed if type(completed) is dict else _MISS
    if type(value) not in (list, tuple) or len(value) > MAX_PLANNED_ITEMS:
        return _MISS  # graphql-core's path decides (an iterable, a long list, an error)
    items: list[Any] = []
    for item in value:
        if item is None:
            if not nested.item_nullable:
                return _MISS
            items.append(None)
            continue
        completed = planned(plan, item)
        if type(completed) is not dict:
            return _MISS
        items.append(completed)
    return items


__all__ = ["MAX_PLANNED_ITEMS", "Nested", "Partial", "Plan", "Step", "odd", "planned"]
