"""What a Customer selection asks of the loaders: which loaders it needs, how many of
each customer's newest events ``recentEvents`` reads, and whether it reads their
properties. Worked out once per selection, before the loaders run, so each upstream
(or the store) is asked once for the whole batch."""

from __future__ import annotations

from collections.abc import Iterable

from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection
from strawberry.utils.str_converters import to_camel_case

from gateway.upstreams.federation import EVENTS_WINDOW
from gateway.upstreams.fields import FIELD_LOADERS as SNAKE_FIELD_LOADERS
from gateway.upstreams.order_reads import ORDERS_WINDOW, OrdersNeed
from resolvers.graphql.loaders import BEHAVIOUR

MAX_EVENTS = 200
FIRST_EVENTS = 10  # recentEvents(first) by default

# Which loader (and so which upstream) serves each Customer field, by GraphQL name:
# a query only calls the upstreams it selects. Each behavioural field names its own
# loader: the analytics upstream's (shared) or, as configured, the store's.
FIELD_LOADERS: dict[str, str] = {
    to_camel_case(name): name if name in BEHAVIOUR else loader
    for name, loader in SNAKE_FIELD_LOADERS.items()
    if loader
}


def loaders_selected(selections: Iterable[Selection]) -> frozenset[str]:
    """The loaders a Customer selection needs, looking through fragments."""
    names: set[str] = set()
    for selection in selections:
        if isinstance(selection, (FragmentSpread, InlineFragment)):
            names |= loaders_selected(selection.selections)
        elif isinstance(selection, SelectedField) and selection.name in FIELD_LOADERS:
            names.add(FIELD_LOADERS[selection.name])
    return frozenset(names)


def engagement_fields(selections: Iterable[Selection]) -> list[SelectedField]:
    """The ``engagement`` fields of a Customer selection, looking through fragments."""
    found: list[SelectedField] = []
    for selection in selections:
        if isinstance(selection, (FragmentSpread, InlineFragment)):
            found += engagement_fields(selection.selections)
        elif isinstance(selection, SelectedField) and selection.name == "engagement":
            found.append(selection)
    return found


def events_depth(selections: Iterable[Selection]) -> int:
    """How many of a customer's newest events the ``recentEvents`` of a selection read:
    its largest ``first``, or the upstream path's whole window under a ``type`` filter
    (the newest events of that type among them, as the upstream path answers)."""
    depth = 0
    for selection in selections:
        if isinstance(selection, (FragmentSpread, InlineFragment)):
            depth = max(depth, events_depth(selection.selections))
        elif isinstance(selection, SelectedField) and selection.name == "recentEvents":
            window = EVENTS_WINDOW if selection.arguments.get("type") is not None else 0
            asked = selection.arguments.get("first", FIRST_EVENTS)
            depth = max(depth, _first(asked, MAX_EVENTS), window)
    return depth


FIRST_ORDERS = 10  # orders(first) by default


def orders_need(selections: Iterable[Selection]) -> OrdersNeed:
    """What the ``orders`` and ``lastOrderAt`` of a selection read: the largest
    ``first``, and whether any ``orders`` asks for line items. A shop that prices its
    queries reads no more than this, and never less."""
    first, lines = 0, False
    for selection in selections:
        if isinstance(selection, (FragmentSpread, InlineFragment)):
            inner = orders_need(selection.selections)
            first, lines = max(first, inner.first), lines or inner.line_items
        elif isinstance(selection, SelectedField) and selection.name == "lastOrderAt":
            first = max(first, 1)
        elif isinstance(selection, SelectedField) and selection.name == "orders":
            asked = selection.arguments.get("first", FIRST_ORDERS)
            first = max(first, _first(asked, ORDERS_WINDOW))
            lines = lines or _selects(selection.selections, _LINE_ITEMS)
    return OrdersNeed(first, lines)


_LINE_ITEMS = frozenset({"lineItems"})
# Event fields read from a stored call's properties: without them in the selection, the
# store leaves the properties unread (at 5,000 events a send, decoding them was a tenth
# of the request).
_EVENT_DETAIL = frozenset({"properties", "sessionId"})


def events_detailed(selections: Iterable[Selection]) -> bool:
    """Whether a selection's ``recentEvents`` ask for their properties or session id."""
    for selection in selections:
        if isinstance(selection, (FragmentSpread, InlineFragment)):
            if events_detailed(selection.selections):
                return True
        elif (
            isinstance(selection, SelectedField)
            and selection.name == "recentEvents"
            and _selects(selection.selections, _EVENT_DETAIL)
        ):
            return True
    return False


def _selects(selections: Iterable[Selection], names: frozenset[str]) -> bool:
    for selection in selections:
        if isinstance(selection, (FragmentSpread, InlineFragment)):
            if _selects(selection.selections, names):
                return True
        elif isinstance(selection, SelectedField) and selection.name in names:
            return True
    return False


def clamp(first: int, most: int) -> int:
    return max(0, min(first, most))


def _first(value: object, most: int) -> int:
    """A ``first`` argument as a selection holds it: a variable's value, or a literal's
    text (``"5"``); the most there is when unreadable (more read, never fewer)."""
    try:
        return clamp(int(str(value)), most)
    except ValueError:
        return most


__all__ = [
    "FIELD_LOADERS",
    "FIRST_EVENTS",
    "FIRST_ORDERS",
    "MAX_EVENTS",
    "clamp",
    "events_depth",
    "events_detailed",
    "loaders_selected",
    "orders_need",
]
