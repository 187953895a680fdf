"""Abuse limits on GraphQL documents, checked before anything executes.

Depth and introspection are validation rules, built once per schema so that
``ValidationCache`` keeps one verdict per document (a rule class built per request
would miss it every time). Cost depends on the variables (an ESP sends
``customers(ids: $ids)``), so it cannot be a cached validation rule: it is checked
after validation, from a plan compiled once per (document, operation) in which only
the sizes that variables give are left open (see ``resolvers.graphql.query_cost``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphql import (
    ASTValidationRule,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
)
from graphql.language.visitor import SKIP, VisitorAction
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.types import ExecutionContext
from strawberry.types.execution import PreExecutionError

from gateway.settings import Settings
from resolvers.graphql.query_cost import CostPlan, compile_cost

_PLANS_KEPT = 1024  # distinct documents remembered, like the parser and validation caches


def build_limits(settings: Settings) -> QueryCost:
    """The settings' size, depth, cost and introspection limits, every rule class and
    the cost plans' cache built here, once per schema."""
    rules: list[type[ASTValidationRule]] = [depth_rule(settings.max_query_depth)]
    if not settings.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    return QueryCost(
        settings.max_query_cost,
        tuple(rules),
        max_tokens=settings.max_query_tokens,
        max_fields=settings.max_query_fields,
        max_root_fields=settings.max_root_fields,
        # A batch's ids are values too: never fewer than a batch may hold.
        max_variable_values=max(settings.max_variable_values, settings.max_batch_size),
        cost_unit=settings.rate_limit_cost_unit,
        # A render costs one per thousand steps its budget allows, on top of its result:
        # 1,000 customers with 49 renders each cost a million, refused before any runs.
        extra={
            ("Customer", "render"): render_cost(settings),
            ("Query", "renderBatch"): render_cost(settings),
        },
    )


def render_cost(settings: Settings) -> int:
    return max(1, settings.render_max_steps // 1000)


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


class QueryCostError(GraphQLError):
    """The operation would cost more than the limit allows."""


class QueryCost:
    """The limits of one schema: its cost limit with the compiled plans, the size
    limits checked before validation, and the validation rules its extension adds to
    every operation."""

    def __init__(
        self,
        limit: int,
        rules: tuple[type[ASTValidationRule], ...] = (),
        *,
        max_tokens: int = 5000,
        max_fields: int = 500,
        max_root_fields: int = 50,
        max_variable_values: int = 5000,
        cost_unit: int = 100,
        extra: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self.limit = limit
        self.rules = rules
        self.max_tokens = max_tokens
        self.max_fields = max_fields
        self.max_root_fields = max_root_fields
        self.max_variable_values = max_variable_values
        self.cost_unit = cost_unit
        self.extra = dict(extra or {})
        self._plans: dict[tuple[str, str | None], CostPlan] = {}

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
            plan = compile_cost(schema, document, operation_name, self.extra)
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

    def enforce(self, context: ExecutionContext) -> int | None:
        """Before execution: an operation over the limit gets a result that replaces
        it, so nothing runs and the view answers a request error (400, no data).
        Returns the cost of an operation within the limit."""
        if context.graphql_document is None or context.result is not None:
            return None
        try:
            return self.check(
                context.schema._schema,
                context.graphql_document,
                context.query,
                context.operation_name,
                context.variables,
            )
        except QueryCostError as error:
            context.result = PreExecutionError(data=None, errors=[error])
            return None
