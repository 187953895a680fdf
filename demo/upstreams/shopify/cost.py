"""Shopify's calculated query cost and its leaky bucket, for the sample GraphQL endpoint.

The rules are Shopify's (GraphQL Admin API rate limits): a scalar or an enum costs 0,
an object 1, a connection 2 plus ``first`` (or ``last``) times the cost of one of its
nodes (the node object's 1 and whatever is selected inside it; ``edges``, ``node``,
``nodes`` and ``pageInfo`` are the connection's own wrappers and cost nothing more).
The requested cost is computed from the query before it runs; the actual cost from
what it answered (connections sized by the nodes they returned, a null object free).
A single query may not request more than ``MAX_QUERY_COST``. The bucket must hold the
requested cost before a query runs, and is refunded the difference afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    is_leaf_type,
    value_from_ast,
)

MAX_QUERY_COST = 1000
_WRAPPERS = frozenset({"edges", "node", "nodes", "pageInfo", "cursor", "__typename"})


@dataclass(frozen=True, slots=True)
class Plan:
    """A leaky bucket: its size and how many points it restores a second."""

    maximum: float
    restore_rate: float


# Shopify's largest plan (as the issue sets it) and the standard one.
PLANS = {"plus": Plan(2000.0, 1000.0), "standard": Plan(1000.0, 100.0)}


class Bucket:
    """The points left to one app on the shop; thread-safe."""

    def __init__(self, plan: Plan = PLANS["plus"]) -> None:
        self.plan = plan
        self._lock = threading.Lock()
        self._available = plan.maximum
        self._at = time.monotonic()

    def set_plan(self, plan: Plan) -> None:
        with self._lock:
            self.plan, self._available, self._at = plan, plan.maximum, time.monotonic()

    def _restore(self) -> None:
        now = time.monotonic()
        rate, top = self.plan.restore_rate, self.plan.maximum
        self._available = min(top, self._available + (now - self._at) * rate)
        self._at = now

    def take(self, cost: int) -> bool:
        """Take ``cost`` points if the bucket holds them; False (nothing taken) if not."""
        with self._lock:
            self._restore()
            if self._available < cost:
                return False
            self._available -= cost
            return True

    def refund(self, points: int) -> None:
        with self._lock:
            self._restore()
            self._available = min(self.plan.maximum, self._available + max(0, points))

    def status(self) -> dict[str, float]:
        with self._lock:
            self._restore()
            return {
                "maximumAvailable": self.plan.maximum,
                "currentlyAvailable": float(int(self._available)),
                "restoreRate": self.plan.restore_rate,
            }


class CostWalk:
    """Requested and actual cost of one operation against the schema."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables

    def requested(self, operation: OperationDefinitionNode) -> int:
        root = self.schema.query_type
        assert root is not None
        return self._selection(operation.selection_set, root, None, requested=True)

    def actual(self, operation: OperationDefinitionNode, data: Any) -> int:
        root = self.schema.query_type
        assert root is not None
        return self._selection(operation.selection_set, root, data, requested=False)

    def _fields(self, selection_set: SelectionSetNode) -> list[FieldNode]:
        fields: list[FieldNode] = []
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                fields.append(selection)
            elif isinstance(selection, InlineFragmentNode):
                fields.extend(self._fields(selection.selection_set))
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is not None:
                    fields.extend(self._fields(fragment.selection_set))
        return fields

    def _selection(
        self, selection_set: SelectionSetNode, parent: GraphQLObjectType, data: Any, requested: bool
    ) -> int:
        total = 0
        for node in self._fields(selection_set):
            name = node.name.value
            if name.startswith("__"):
                continue
            definition = parent.fields[name]
            kind = get_named_type(definition.type)
            if is_leaf_type(kind) or not isinstance(kind, GraphQLObjectType):
                continue
            key = node.alias.value if node.alias else name
            value = data.get(key) if isinstance(data, Mapping) else None
            if not requested and value is None:
                continue
            if kind.name.endswith("Connection"):
                total += self._connection(node, definition.args, kind, value, requested)
            elif node.selection_set is not None:
                total += 1 + self._selection(node.selection_set, kind, value, requested)
        return total

    def _connection(
        self,
        node: FieldNode,
        definitions: Mapping[str, Any],
        kind: GraphQLObjectType,
        value: Any,
        requested: bool,
    ) -> int:
        size = 0
        for argument in node.arguments or ():
            if argument.name.value in ("first", "last"):
                given = value_from_ast(
                    argument.value, definitions[argument.name.value].type, dict(self.variables)
                )
                size = int(given or 0)
        node_type = get_named_type(kind.fields["nodes"].type)
        assert isinstance(node_type, GraphQLObjectType)
        if node.selection_set is None:
            return 2
        selections: list[tuple[SelectionSetNode, Any]] = []
        for wrapper in self._fields(node.selection_set):
            key = wrapper.alias.value if wrapper.alias else wrapper.name.value
            inner = value.get(key) if isinstance(value, Mapping) else None
            if wrapper.name.value == "nodes" and wrapper.selection_set is not None:
                selections.append((wrapper.selection_set, inner))
            elif wrapper.name.value == "edges" and wrapper.selection_set is not None:
                for edge_field in self._fields(wrapper.selection_set):
                    if edge_field.name.value == "node" and edge_field.selection_set is not None:
                        items = [e.get("node") for e in inner or [] if isinstance(e, Mapping)]
                        selections.append((edge_field.selection_set, items))
        if requested:
            per_node = max(
                (1 + self._selection(s, node_type, None, True) for s, _ in selections), default=1
            )
            return 2 + size * per_node
        returned = 0
        for selection, items in selections:
            returned = max(
                returned,
                sum(1 + self._selection(selection, node_type, item, False) for item in items or []),
            )
        return 2 + returned
