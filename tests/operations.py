"""Generated GraphQL operations over the whole schema, with real data in their arguments.

hypothesis-graphql writes valid documents (every root field, every selection the
schema allows, arguments of the right types); with its random values nearly every
operation would stop at the first argument check (`BAD_USER_INPUT`). So most
arguments are then rewritten to values the test database really holds: customer ids,
emails, ``source:externalId`` pairs, template names, categories, event types. Some
are left as generated, so bad input keeps being tried too.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import graphql
from hypothesis import strategies as st
from hypothesis_graphql import nodes, queries

N = TypeVar("N", bound=graphql.Node)
# How often, in percent, an argument keeps its generated value instead of a real one.
# (Drawn as an integer under 100 that must reach this: hypothesis favours small
# integers, so the real value is both the common case and what a failure shrinks to.)
KEEP_GENERATED = 15
LIQUID = [
    "Hi {{ first_name | default: 'there' }}",
    "{% for order in orders limit: 2 %}{{ order.name }} {% endfor %}",
    "{% if consent.personalisation %}{{ cart.subtotal }}{% else %}-{% endif %}",
    "{{ customer.lifecycle_stage }} {{ engagement.sessions_30d }} {{ city }}",
    "{% for p in recommendations %}{{ p.title }}{% endfor %}{{ date_of_birth }}",
    "{{ nope.nothing }}{% if %}",  # a syntax error
]


@dataclass(frozen=True)
class RealData:
    """What the test database holds, in a stable order (replays pick the same)."""

    ids: Sequence[str]  # customers reads and writes use
    expendable_ids: Sequence[str]  # customers that merges and erasures may consume
    emails: Sequence[str]
    identities: Sequence[tuple[str, str]]
    templates: Sequence[str]
    categories: Sequence[str]
    event_types: Sequence[str]
    actors: Sequence[str]


def _datetime_node(moment: datetime) -> graphql.ValueNode:
    return nodes.String(moment.isoformat())


# Values for the custom scalars, as AST nodes (hypothesis-graphql knows only the
# built-in ones). Times with and without an offset, in and out of range.
SCALARS: dict[str, st.SearchStrategy[graphql.ValueNode]] = {
    "DateTime": st.one_of(
        st.datetimes(timezones=st.just(UTC)).map(_datetime_node),
        st.datetimes().map(_datetime_node),
        st.text(max_size=8).map(nodes.String),
    ),
    "Date": st.dates().map(lambda d: nodes.String(d.isoformat())),
    "Decimal": st.decimals(allow_nan=False, allow_infinity=False, places=2).map(
        lambda d: nodes.String(str(d))
    ),
    "JSON": st.one_of(st.integers().map(nodes.Int), st.text(max_size=8).map(nodes.String)),
}


def subscription_schema(schema: graphql.GraphQLSchema) -> graphql.GraphQLSchema:
    """The subscription type as a query type: hypothesis-graphql writes queries and
    mutations only; the document is turned into a subscription after."""
    assert schema.subscription_type is not None
    return graphql.GraphQLSchema(query=schema.subscription_type, types=schema.type_map.values())


def _ast(document: graphql.DocumentNode) -> graphql.DocumentNode:
    return document


@functools.cache  # building the strategy walks the whole schema: once per kind
def documents(schema: graphql.GraphQLSchema, kind: str) -> st.SearchStrategy[Any]:
    """Generated documents of one operation kind, as AST (to be rewritten)."""
    source = subscription_schema(schema) if kind == "subscription" else schema
    if kind == "mutation":
        from hypothesis_graphql import mutations

        return mutations(source, custom_scalars=SCALARS, print_ast=_ast)
    return queries(source, custom_scalars=SCALARS, print_ast=_ast)


Draw = Callable[[st.SearchStrategy[Any]], Any]


def _values(real: RealData) -> Mapping[tuple[str, str, str], st.SearchStrategy[Any]]:
    """Real values per (type, field, argument), as Python values."""
    ids = st.sampled_from(real.ids)
    some_ids = st.lists(st.one_of(ids, st.just(str(uuid.uuid4()))), min_size=1, max_size=8)
    emails = st.sampled_from(real.emails)
    name = st.sampled_from(real.templates)
    pairs = st.sampled_from(real.identities)
    expendable = st.sampled_from(real.expendable_ids)
    new_email = st.uuids().map(lambda u: f"fuzz.{u.hex[:12]}@example.com")
    identities = st.lists(
        st.one_of(
            pairs.map(lambda p: {"source": p[0], "externalId": p[1]}),
            st.uuids().map(lambda u: {"source": "shopify", "externalId": str(u.int % 10**12)}),
        ),
        max_size=2,
    )
    customer_input = st.fixed_dictionaries(
        {"email": st.one_of(emails, new_email)},
        optional={
            "firstName": st.text(max_size=20),
            "lastName": st.text(max_size=20),
            "phone": st.sampled_from(["+14155550123", "+44 20 7946 0958", "020 7946", "x"]),
            "locale": st.sampled_from(["en", "en-US", "fr-FR", "??"]),
            "identities": identities,
        },
    )
    return {
        ("Query", "customer", "id"): ids,
        ("Query", "customer", "email"): emails,
        ("Query", "customer", "identity"): pairs.map(lambda p: f"{p[0]}:{p[1]}"),
        ("Query", "customers", "ids"): some_ids,
        ("Query", "customers", "emails"): st.lists(emails, min_size=1, max_size=8),
        ("Query", "template", "name"): name,
        ("Query", "renderBatch", "name"): name,
        ("Query", "renderBatch", "customerIds"): some_ids,
        ("Query", "renderBatch", "version"): st.sampled_from([None, 1]),
        ("Query", "exportCustomer", "id"): ids,
        ("Query", "auditLog", "customerId"): ids,
        ("Query", "auditLog", "actor"): st.sampled_from(real.actors),
        ("Query", "auditLog", "first"): st.integers(1, 1000),
        ("Mutation", "upsertCustomer", "input"): customer_input,
        ("Mutation", "invalidateCustomer", "id"): ids,
        ("Mutation", "saveTemplate", "name"): name,
        ("Mutation", "saveTemplate", "source"): st.sampled_from(LIQUID),
        ("Mutation", "mergeCustomers", "into"): ids,
        ("Mutation", "mergeCustomers", "from"): expendable,
        ("Mutation", "mergeCustomers", "reason"): st.sampled_from(["duplicate", "same person"]),
        ("Mutation", "unmergeCustomer", "source"): st.just(None),  # see _pair below
        ("Mutation", "setConsent", "customerId"): ids,
        ("Mutation", "setConsent", "source"): st.sampled_from(["api", "preference-centre"]),
        ("Mutation", "forgetCustomer", "id"): expendable,
        # One experiment, far in the future: a generated one running now would change
        # what every later test's recommendations serve.
        ("Mutation", "saveExperiment", "name"): st.just("fuzz-experiment"),
        ("Mutation", "saveExperiment", "start"): st.just(datetime(2099, 1, 1, tzinfo=UTC)),
        ("Mutation", "saveExperiment", "end"): st.just(datetime(2099, 1, 2, tzinfo=UTC)),
        ("Query", "experiment", "name"): st.sampled_from(["fuzz-experiment", "none-such"]),
        ("Subscription", "customerUpdated", "id"): ids,
        ("Customer", "render", "name"): name,
        ("Customer", "render", "template"): st.sampled_from(LIQUID),
        ("Customer", "render", "version"): st.sampled_from([None, 1]),
        ("Customer", "attributes", "name"): st.sampled_from(["email", "first_name", "city"]),
        ("Customer", "recentEvents", "type"): st.sampled_from(real.event_types),
        ("Customer", "recommendations", "category"): st.sampled_from(real.categories),
        ("Customer", "recommendations", "limit"): st.integers(1, 12),
        ("Customer", "orders", "first"): st.integers(0, 60),
    }


# Fields that take exactly one of some arguments: most operations give just one.
ONE_OF = {
    ("Query", "customer"): ("id", "email", "identity"),
    ("Query", "customers"): ("ids", "emails"),
    ("Customer", "render"): ("template", "name"),
}


class Rewriter:
    """Rewrites a generated document's arguments to real values, drawing each choice
    from hypothesis (so a failure shrinks and replays)."""

    def __init__(self, schema: graphql.GraphQLSchema, real: RealData, draw: Draw) -> None:
        self.schema, self.draw, self.real = schema, draw, real
        self.values = _values(real)

    def document(self, document: graphql.DocumentNode, kind: str) -> str:
        [operation] = document.definitions
        assert isinstance(operation, graphql.OperationDefinitionNode)
        root = {"query": self.schema.query_type, "mutation": self.schema.mutation_type}
        parent = root.get(kind) or self.schema.subscription_type
        assert parent is not None
        rewritten = _replace(
            operation,
            selection_set=self._selections(operation.selection_set, parent),
            operation=graphql.OperationType.SUBSCRIPTION
            if kind == "subscription"
            else operation.operation,
        )
        return graphql.print_ast(graphql.DocumentNode(definitions=(rewritten,)))

    def _selections(
        self, selection_set: graphql.SelectionSetNode, parent: graphql.GraphQLObjectType
    ) -> graphql.SelectionSetNode:
        selections = []
        for node in selection_set.selections:
            if isinstance(node, graphql.FieldNode) and node.name.value in parent.fields:
                selections.append(self._field(node, parent))
            else:
                selections.append(node)
        return _replace(selection_set, selections=tuple(selections))

    def _field(self, node: graphql.FieldNode, parent: graphql.GraphQLObjectType) -> Any:
        name = node.name.value
        definition = parent.fields[name]
        given = {a.name.value: a.value for a in node.arguments or ()}
        one_of = ONE_OF.get((parent.name, name))
        forced = None
        if one_of and self._real():
            forced = self.draw(st.sampled_from(one_of))
            given = {k: v for k, v in given.items() if k not in one_of or k == forced}
            given.setdefault(forced, graphql.NullValueNode())
        if (parent.name, name) == ("Mutation", "unmergeCustomer") and self._real():
            source, external_id = self.draw(st.sampled_from(self.real.identities))
            given |= {"source": nodes.String(source), "externalId": nodes.String(external_id)}
        arguments = []
        for arg_name, value in given.items():
            strategy = self.values.get((parent.name, name, arg_name))
            argument = definition.args.get(arg_name)
            use_real = arg_name == forced or self._real()
            if strategy is not None and argument is not None and use_real:
                real = self.draw(strategy)
                if real is not None or not graphql.is_non_null_type(argument.type):
                    value = graphql.ast_from_value(real, argument.type) or value
            name_node = graphql.NameNode(value=arg_name)
            arguments.append(graphql.ArgumentNode(name=name_node, value=value))
        inner = graphql.get_named_type(definition.type)
        selection_set = node.selection_set
        if selection_set is not None and isinstance(inner, graphql.GraphQLObjectType):
            selection_set = self._selections(selection_set, inner)
        return _replace(node, arguments=tuple(arguments), selection_set=selection_set)

    def _real(self) -> bool:
        return bool(self.draw(st.integers(0, 99)) < 100 - KEEP_GENERATED)


def _replace(node: N, **changes: Any) -> N:
    """A copy of an AST node with some attributes changed (graphql-core's are frozen)."""
    kept = {key: getattr(node, key) for key in type(node).keys if key != "loc"}
    return type(node)(**(kept | changes))
