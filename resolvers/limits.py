"""Abuse limits on GraphQL documents, checked before anything executes.

Depth and introspection are validation rules, built once per schema so that
``ValidationCache`` keeps one verdict per document (a rule class built per request
would miss it every time). Cost depends on the variables (an ESP sends
``customers(ids: $ids)``), so it cannot be a cached validation rule: it is checked
after validation, from a plan compiled once per (document, operation) in which only
the sizes that variables give are left open; a request multiplies those out.

The cost model (``Settings.max_query_cost`` gives the figures the default allows):

- a scalar or enum field costs 0; an object field costs 1 plus its selection;
- a list field costs its size times that: the value of its ``first``/``last``/``limit``
  argument (or that argument's default), else the summed lengths of its list arguments
  (``customers(ids: […])``), else ``DEFAULT_LIST_WEIGHT``;
- fragments count where they are spread; a field selected twice counts twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    ASTValidationRule,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
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
    ValidationRule,
    ValueNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
)
from graphql.language.visitor import SKIP, VisitorAction
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import AddValidationRules, SchemaExtension
from strawberry.types.execution import PreExecutionError

from gateway.settings import Settings

DEFAULT_LIST_WEIGHT = 10
"""What a list without a size argument weighs (e.g. ``lineItems``, ``cart.items``)."""
SIZE_ARGUMENTS = ("first", "last", "limit")
_PLANS_KEPT = 1024  # distinct documents remembered, like the parser and validation caches

ExtensionFactory = Callable[[], SchemaExtension]


def limit_extensions(settings: Settings) -> list[ExtensionFactory]:
    """Schema extensions enforcing the settings' depth, cost and introspection limits.

    Every rule class and the cost plans' cache are built here, once per schema; the
    factories make a fresh extension per request from them.
    """
    rules: list[type[ASTValidationRule]] = [depth_rule(settings.max_query_depth)]
    if not settings.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    cost = QueryCost(settings.max_query_cost)
    return [lambda: AddValidationRules(rules), cost.extension]


# --- depth ---------------------------------------------------------------------------


def depth_rule(max_depth: int) -> type[ValidationRule]:
    """A validation rule refusing operations nested deeper than ``max_depth`` fields."""

    class QueryDepthRule(ValidationRule):
        def enter_operation_definition(
            self, node: OperationDefinitionNode, *_args: object
        ) -> VisitorAction:
            fragments = {
                d.name.value: d
                for d in self.context.document.definitions
                if isinstance(d, FragmentDefinitionNode)
            }
            depth = _depth(node.selection_set, fragments, {}, set())
            if depth > max_depth:
                self.report_error(
                    GraphQLError(
                        f"Query depth {depth} exceeds the limit of {max_depth}",
                        node,
                        extensions={"code": "QUERY_TOO_DEEP", "depth": depth, "limit": max_depth},
                    )
                )
            return SKIP  # nothing else in the operation concerns this rule

    return QueryDepthRule


def _depth(
    selections: SelectionSetNode | None,
    fragments: Mapping[str, FragmentDefinitionNode],
    memo: dict[str, int],
    visiting: set[str],
) -> int:
    """Fields nested under ``selections``; fragments are measured once each (memo)."""
    deepest = 0
    for selection in selections.selections if selections else ():
        if isinstance(selection, FieldNode):
            depth = 1 + _depth(selection.selection_set, fragments, memo, visiting)
        elif isinstance(selection, InlineFragmentNode):
            depth = _depth(selection.selection_set, fragments, memo, visiting)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if name not in memo and fragment is not None and name not in visiting:
                # A cycle is NoFragmentCyclesRule's to report; here it just stops.
                visiting.add(name)
                memo[name] = _depth(fragment.selection_set, fragments, memo, visiting)
                visiting.discard(name)
            depth = memo.get(name, 0)
        deepest = max(deepest, depth)
    return deepest


# --- cost ----------------------------------------------------------------------------


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
    item: _Plan


@dataclass(frozen=True, slots=True)
class _Plan:
    """A cost known up to the variables: ``constant`` plus the lists variables size."""

    constant: int
    lists: tuple[_List, ...] = ()

    def cost(self, variables: Mapping[str, Any]) -> int:
        total = self.constant
        for part in self.lists:
            size = part.static + sum(s.of(variables) for s in part.sizes)
            total += part.factor * size * part.item.cost(variables)
        return total

    def times(self, factor: int) -> _Plan:
        if factor == 1:
            return self
        lists = tuple(_List(p.factor * factor, p.static, p.sizes, p.item) for p in self.lists)
        return _Plan(self.constant * factor, lists)


def _sum(plans: Iterator[_Plan]) -> _Plan:
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
    return _Plan(constant, tuple(folded.values()))


class QueryCostError(GraphQLError):
    """The operation would cost more than the limit allows."""


class QueryCost:
    """The cost limit of one schema: compiled plans per document, and the extension."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._plans: dict[tuple[str, str | None], _Plan] = {}

    def extension(self) -> SchemaExtension:
        return _QueryCostExtension(self)

    def check(
        self,
        schema: GraphQLSchema,
        document: Any,
        query: str | None,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
    ) -> int:
        """The operation's cost for these variables; raises QueryCostError over the limit."""
        key = (query, operation_name) if query is not None else None
        plan = self._plans.get(key) if key else None
        if plan is None:
            plan = _Compiler(schema, document).operation(operation_name)
            if key:
                if len(self._plans) >= _PLANS_KEPT:
                    del self._plans[next(iter(self._plans))]  # the oldest
                self._plans[key] = plan
        cost = plan.cost(variables or {}) if plan.lists else plan.constant
        if cost > self.limit:
            raise QueryCostError(
                f"Query cost {cost} exceeds the limit of {self.limit}",
                extensions={"code": "QUERY_TOO_COSTLY", "cost": cost, "limit": self.limit},
            )
        return cost


class _QueryCostExtension(SchemaExtension):
    def __init__(self, limiter: QueryCost) -> None:
        self.limiter = limiter

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is not None and context.result is None:
            try:
                self.limiter.check(
                    context.schema._schema,
                    context.graphql_document,
                    context.query,
                    context.operation_name,
                    context.variables,
                )
            except QueryCostError as error:
                # A result set before execution replaces it: nothing runs, and the
                # view answers a PreExecutionError as a request error (400, no data).
                context.result = PreExecutionError(data=None, errors=[error])
        yield


class _Compiler:
    """Turns one operation of a validated document into a ``_Plan``."""

    def __init__(self, schema: GraphQLSchema, document: Any) -> None:
        self.schema = schema
        self.fragments: dict[str, FragmentDefinitionNode] = {}
        self.operations: list[OperationDefinitionNode] = []
        for definition in document.definitions:
            if isinstance(definition, FragmentDefinitionNode):
                self.fragments[definition.name.value] = definition
            elif isinstance(definition, OperationDefinitionNode):
                self.operations.append(definition)
        self.defaults: dict[str, ValueNode | None] = {}
        self._fragment_plans: dict[str, _Plan] = {}

    def operation(self, name: str | None) -> _Plan:
        operation = next(
            (o for o in self.operations if name is None or (o.name and o.name.value == name)),
            None,
        )
        if operation is None:
            return _Plan(0)  # graphql-core refuses it on execution
        self.defaults = {
            d.variable.name.value: d.default_value for d in operation.variable_definitions or ()
        }
        root = self.schema.get_root_type(operation.operation)
        return self._selections(root, operation.selection_set) if root else _Plan(0)

    def _selections(self, parent: GraphQLNamedType, selections: SelectionSetNode | None) -> _Plan:
        return _sum(self._selection_plans(parent, selections))

    def _selection_plans(
        self, parent: GraphQLNamedType, selections: SelectionSetNode | None
    ) -> Iterator[_Plan]:
        for selection in selections.selections if selections else ():
            if isinstance(selection, FieldNode):
                yield self._field(parent, selection)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                on = self.schema.get_type(condition.name.value) if condition else parent
                yield self._selections(on or parent, selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                yield self._fragment(selection.name.value)

    def _fragment(self, name: str) -> _Plan:
        plan = self._fragment_plans.get(name)
        if plan is None:
            fragment = self.fragments.get(name)
            on = self.schema.get_type(fragment.type_condition.name.value) if fragment else None
            plan = self._selections(on, fragment.selection_set) if fragment and on else _Plan(0)
            self._fragment_plans[name] = plan
        return plan

    def _field(self, parent: GraphQLNamedType, node: FieldNode) -> _Plan:
        name = node.name.value
        if name == "__schema":
            definition = SchemaMetaFieldDef
        elif name == "__type":
            definition = TypeMetaFieldDef
        else:
            fields = getattr(parent, "fields", None) or {}
            if name not in fields:
                return _Plan(0)  # __typename, or a field validation already refused
            definition = fields[name]
        field_type: GraphQLOutputType = definition.type
        if node.selection_set is None:
            item = _Plan(0)  # scalars and enums (and lists of them) cost nothing
        else:
            children = self._selections(get_named_type(field_type), node.selection_set)
            item = _Plan(1 + children.constant, children.lists)
        if not isinstance(get_nullable_type(field_type), GraphQLList):
            return item
        static, sizes = self._size(definition.args, node)
        if not sizes:
            return item.times(static)
        return _Plan(0, (_List(1, static, sizes, item),))

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
