"""The cost of a GraphQL operation, compiled once and multiplied out per request.

The model (``Settings.max_query_cost`` gives the figures its default allows):

- a scalar or enum field costs 0; an object field costs 1 plus its selection, plus
  its own work where it does more than read data (``extra``: a Liquid render costs
  what its step budget allows it to do);
- a list field costs its size times that: the value of its ``first``/``last``/``limit``
  argument (or that argument's default), else the summed lengths of its list arguments
  (``customers(ids: […])``), else ``DEFAULT_LIST_WEIGHT``;
- a page (an object field with a size argument, such as a segment's
  ``customers(first)``) passes its size to the lists it holds, ``nodes`` and ``edges``;
- fragments count where they are spread; a field selected twice counts twice.

Sizes written in the document are folded into constants when the plan is compiled;
only those variables give stay open, so a request's cost is a few multiplications.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLList,
    GraphQLNamedType,
    GraphQLOutputType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    NullValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef

DEFAULT_LIST_WEIGHT = 10
"""What a list without a size argument weighs (e.g. ``lineItems``, ``cart.items``)."""
SIZE_ARGUMENTS = ("first", "last", "limit")
PAGE_LISTS = frozenset({"nodes", "edges"})  # sized by the page that holds them


def compile_cost(
    schema: GraphQLSchema,
    document: Any,
    operation_name: str | None,
    extra: Mapping[tuple[str, str], int] | None = None,
) -> CostPlan:
    """The cost plan of one operation of a validated document; ``extra`` adds to a
    field's own cost, by (type name, field name)."""
    return _Compiler(schema, document, extra or {}).operation(operation_name)


@dataclass(frozen=True, slots=True)
class _Size:
    """A size a request's variable gives: a list's length (``ids``) or a number (``first``)."""

    variable: str
    is_length: bool
    fallback: int  # when the variable is not given: its default, else the argument's

    def of(self, variables: Mapping[str, Any]) -> int:
        value = variables.get(self.variable, _MISSING)
        if value is _MISSING:
            return self.fallback
        if self.is_length:
            # Input coercion turns a single value into a list of one.
            return len(value) if isinstance(value, list) else int(value is not None)
        if isinstance(value, int) and not isinstance(value, bool):
            return max(0, value)
        return self.fallback


_MISSING = object()


@dataclass(frozen=True, slots=True)
class _List:
    """``factor`` times (``static`` + the variable sizes) items, each costing ``item``."""

    factor: int
    static: int
    sizes: tuple[_Size, ...]
    item: CostPlan


@dataclass(frozen=True, slots=True)
class CostPlan:
    """A cost known up to the variables: ``constant`` plus the lists variables size."""

    constant: int
    lists: tuple[_List, ...] = ()

    def cost(self, variables: Mapping[str, Any]) -> int:
        total = self.constant
        for part in self.lists:
            size = part.static + sum(s.of(variables) for s in part.sizes)
            total += part.factor * size * part.item.cost(variables)
        return total

    def times(self, factor: int) -> CostPlan:
        if factor == 1:
            return self
        lists = tuple(_List(p.factor * factor, p.static, p.sizes, p.item) for p in self.lists)
        return CostPlan(self.constant * factor, lists)


def _sum(plans: Iterator[CostPlan]) -> CostPlan:
    constant = 0
    # Lists with the same size and item fold into one: fragments spread repeatedly
    # cannot grow the plan (or its evaluation) beyond the document's own size.
    folded: dict[tuple[int, tuple[_Size, ...], int], _List] = {}
    for plan in plans:
        constant += plan.constant
        for part in plan.lists:
            key = (part.static, part.sizes, id(part.item))
            seen = folded.get(key)
            factor = part.factor + (seen.factor if seen else 0)
            folded[key] = _List(factor, part.static, part.sizes, part.item)
    return CostPlan(constant, tuple(folded.values()))


class _Compiler:
    """Turns one operation of a validated document into a ``CostPlan``."""

    def __init__(
        self, schema: GraphQLSchema, document: Any, extra: Mapping[tuple[str, str], int]
    ) -> None:
        self.schema = schema
        self.extra = extra
        self.fragments: dict[str, FragmentDefinitionNode] = {}
        self.operations: list[OperationDefinitionNode] = []
        for definition in document.definitions:
            if isinstance(definition, FragmentDefinitionNode):
                self.fragments[definition.name.value] = definition
            elif isinstance(definition, OperationDefinitionNode):
                self.operations.append(definition)
        self.defaults: dict[str, ValueNode | None] = {}
        self._fragment_plans: dict[tuple[str, object], CostPlan] = {}
        # The size of the page whose selection is being compiled (its nodes and edges).
        self._page: tuple[int, tuple[_Size, ...]] | None = None

    def operation(self, name: str | None) -> CostPlan:
        operation = next(
            (o for o in self.operations if name is None or (o.name and o.name.value == name)),
            None,
        )
        if operation is None:
            return CostPlan(0)  # graphql-core refuses it on execution
        self.defaults = {
            d.variable.name.value: d.default_value for d in operation.variable_definitions or ()
        }
        root = self.schema.get_root_type(operation.operation)
        return self._selections(root, operation.selection_set) if root else CostPlan(0)

    def _selections(
        self, parent: GraphQLNamedType, selections: SelectionSetNode | None
    ) -> CostPlan:
        return _sum(self._selection_plans(parent, selections))

    def _selection_plans(
        self, parent: GraphQLNamedType, selections: SelectionSetNode | None
    ) -> Iterator[CostPlan]:
        for selection in selections.selections if selections else ():
            if isinstance(selection, FieldNode):
                yield self._field(parent, selection)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                on = self.schema.get_type(condition.name.value) if condition else parent
                yield self._selections(on or parent, selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                yield self._fragment(selection.name.value)

    def _fragment(self, name: str) -> CostPlan:
        # By page too: a fragment of a page's lists spread in pages of two sizes costs
        # what each page holds, not what the first one held.
        key = (name, self._page)
        plan = self._fragment_plans.get(key)
        if plan is None:
            fragment = self.fragments.get(name)
            on = self.schema.get_type(fragment.type_condition.name.value) if fragment else None
            plan = self._selections(on, fragment.selection_set) if fragment and on else CostPlan(0)
            self._fragment_plans[key] = plan
        return plan

    def _field(self, parent: GraphQLNamedType, node: FieldNode) -> CostPlan:
        name = node.name.value
        if name == "__schema":
            definition = SchemaMetaFieldDef
        elif name == "__type":
            definition = TypeMetaFieldDef
        else:
            fields = getattr(parent, "fields", None) or {}
            if name not in fields:
                return CostPlan(0)  # __typename, or a field validation already refused
            definition = fields[name]
        field_type: GraphQLOutputType = definition.type
        own = self.extra.get((parent.name, name), 0)
        is_list = isinstance(get_nullable_type(field_type), GraphQLList)
        page, outer = self._page, self._page
        if not is_list and any(a in definition.args for a in SIZE_ARGUMENTS):
            page = self._size(definition.args, node)  # a page: its lists are this long
        elif is_list or name not in PAGE_LISTS:
            page = None  # only a page's own lists take its size
        if node.selection_set is None:
            item = CostPlan(own)  # scalars and enums (and lists of them) cost nothing
        else:
            self._page = page
            try:
                children = self._selections(get_named_type(field_type), node.selection_set)
            finally:
                self._page = outer
            item = CostPlan(1 + own + children.constant, children.lists)
        if not is_list:
            return item
        if name in PAGE_LISTS and outer is not None and not definition.args:
            static, sizes = outer
        else:
            static, sizes = self._size(definition.args, node)
        if not sizes:
            return item.times(static)
        return CostPlan(0, (_List(1, static, sizes, item),))

    def _size(self, arguments: Mapping[str, Any], node: FieldNode) -> tuple[int, tuple[_Size, ...]]:
        """A list's size: its first/limit, else its list arguments' lengths, else the default."""
        given = {a.name.value: a.value for a in node.arguments or ()}
        for name in SIZE_ARGUMENTS:
            if name in arguments:
                default = arguments[name].default_value
                fallback = default if isinstance(default, int) else DEFAULT_LIST_WEIGHT
                return self._value(given.get(name), False, fallback)
        static, sizes = 0, list[_Size]()
        lists = [
            n for n, a in arguments.items() if isinstance(get_nullable_type(a.type), GraphQLList)
        ]
        for name in lists:
            if name in given:
                value, variable = self._value(given[name], True, 0)
                static += value
                sizes.extend(variable)
        if not any(name in given for name in lists):
            return DEFAULT_LIST_WEIGHT, ()
        return static, tuple(sizes)

    def _value(
        self, value: ValueNode | None, is_length: bool, fallback: int
    ) -> tuple[int, tuple[_Size, ...]]:
        """A size written in the document (static), or left to a variable."""
        if isinstance(value, VariableNode):
            name = value.name.value
            default = self.defaults.get(name)
            if default is not None and not isinstance(default, NullValueNode):
                fallback = self._value(default, is_length, fallback)[0]
            return 0, (_Size(name, is_length, fallback),)
        if value is None:
            return fallback, ()
        if isinstance(value, ListValueNode):
            return len(value.values), ()
        if isinstance(value, IntValueNode):
            return max(0, int(value.value)), ()
        if isinstance(value, NullValueNode):
            return 0 if is_length else fallback, ()
        return 1 if is_length else fallback, ()  # a single value coerced to a list of one
