"""What a template reads of the customer's orders: how many of the newest, and whether
their line items, as a GraphQL selection says it with ``orders(first)`` and
``lineItems``.

A shop that prices its queries (Shopify GraphQL) charges for every order and line item
asked: a send whose template shows the last 3 orders' names and totals costs about a
tenth of one that reads every customer's 50 newest orders with their line items. So the
analysis looks at every place the template names ``orders`` (or ``customer.orders``):

- ``{% for o in orders limit: 3 offset: 1 %}`` (or ``tablerow``) with literal numbers
  reads at most ``offset + limit`` orders (Liquid slices before ``reversed``);
- ``orders.first`` and ``orders[2]`` read at most that many;
- anything else (``orders.size``, ``orders.last``, a filter, an assignment, a limit held
  in a variable, ``offset: continue``) may read them all.

Line items are read only if some order is used as a whole (``{{ o }}``, ``| json``,
assigned), through a computed key (``o[k]``) or by ``line_items``: every name bound
by a loop over the orders is checked wherever it appears in the template, so a name
reused for something else only makes the answer larger, never smaller. The answer errs
on reading more; reading less than the template uses would render wrong output.

Runs in the render worker beside the parse: it imports python-liquid only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from liquid import BoundTemplate
from liquid.ast import Node
from liquid.builtin.expressions import Path
from liquid.builtin.expressions.loop import LoopExpression
from liquid.builtin.expressions.primitive import IntegerLiteral
from liquid.context import RenderContext
from liquid.expression import Expression

__all__ = ["ALL", "OrderSelection", "order_selection"]

ALL = None  # ``first`` when the template may read every order


@dataclass(frozen=True, slots=True)
class OrderSelection:
    first: int | None  # None: all of them (the gateway's window)
    line_items: bool

    def as_json(self) -> dict[str, Any]:
        return {"first": self.first, "line_items": self.line_items}


_EVERYTHING = OrderSelection(ALL, True)
_NOTHING = OrderSelection(0, False)


def order_selection(parsed: BoundTemplate) -> OrderSelection:
    """How many orders, and whether their line items, ``parsed`` may read."""
    walk = _Walk()
    context = RenderContext(parsed)
    for node in parsed.nodes:
        walk.node(node, context)
    if walk.everything:
        return _EVERYTHING
    if not walk.first:
        return _NOTHING
    # Every use of a loop's name over the orders (wherever that name appears).
    lines = walk.whole_order or any(
        _reads_line_items(path.path[1:]) for path in walk.paths if path.path[0] in walk.items
    )
    return OrderSelection(walk.first, lines)


class _Walk:
    def __init__(self) -> None:
        self.first = 0
        self.everything = False
        self.whole_order = False  # an order used whole or by a computed key
        self.items: set[str] = set()  # names loops over the orders bind
        self.paths: list[Path] = []  # every path, to check the items' uses at the end

    def node(self, node: Node, context: RenderContext) -> None:
        for expression in node.expressions():
            self.expression(expression)
        for child in node.children(context, include_partials=False):
            self.node(child, context)

    def expression(self, expression: Expression) -> None:
        if isinstance(expression, LoopExpression) and _orders(expression.iterable) is not None:
            self.items.add(str(expression.identifier))
            self._loop(expression)
            for child in expression.children()[1:]:  # limit, offset, cols: not the orders
                self.expression(child)
            return
        if isinstance(expression, Path):
            self.paths.append(expression)
            rest = _orders(expression)
            if rest is not None:
                self._path(rest)
        for child in expression.children():
            self.expression(child)

    def _loop(self, loop: LoopExpression) -> None:
        rest = _orders(loop.iterable)
        if rest or not isinstance(loop.limit, IntegerLiteral):
            self.everything = True  # `orders.x` iterated, or no literal limit
            return
        offset = 0
        if loop.offset is not None:
            if not isinstance(loop.offset, IntegerLiteral):
                self.everything = True  # `offset: continue`, or a variable
                return
            offset = max(0, loop.offset.value)
        self.first = max(self.first, offset + max(0, loop.limit.value))

    def _path(self, rest: list[Any]) -> None:
        """``orders`` followed by ``rest``, outside a loop's iterable."""
        if not rest:
            self.everything = True  # the list itself: printed, filtered, assigned
            return
        index, *item = rest
        if index == "first":
            index = 0
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            self.everything = True  # .size, .last, [-1], [k]
            return
        self.first = max(self.first, index + 1)
        if _reads_line_items(item):
            self.whole_order = True


def _orders(expression: Expression) -> list[Any] | None:
    """What follows ``orders`` (or ``customer.orders``) in this path; None if it does
    not name them. ``customer`` alone, or a computed key on it, names them too."""
    if not isinstance(expression, Path):
        return None
    path = list(expression.path)
    if path and path[0] == "customer":
        if len(path) == 1 or not isinstance(path[1], str):
            return []  # the whole customer: its orders with it
        path = path[1:]
    if path and path[0] == "orders":
        return path[1:]
    return None


def _reads_line_items(item: list[Any]) -> bool:
    """Whether these segments after an order (``o.name``: ``["name"]``) may reach its
    line items: used whole, through a computed key, or by name."""
    return not item or any(not isinstance(s, str) or s == "line_items" for s in item)
