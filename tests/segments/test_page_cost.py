"""What a segment page costs against the query cost limit: its lists (``nodes`` and
``edges``) are as long as the page's ``first``, whether written or sent as a variable,
and a fragment spread in pages of two sizes costs each page's size."""

from __future__ import annotations

from typing import Any

from graphql import parse

from resolvers.graphql.limits import QueryCost
from resolvers.graphql.schema import build_schema


def _cost(query: str, **variables: Any) -> int:
    schema = build_schema()._schema
    return QueryCost(10**12).check(schema, parse(query), query, None, variables)


def test_a_pages_lists_cost_its_size() -> None:
    # segment 1, customers 1, pageInfo 1; each node 1 + consent 1.
    nodes = '{ segment(name: "s") { customers(first: 1000) { nodes { id consent { analytics } } '
    assert _cost(nodes + "pageInfo { hasNextPage } } } }") == 3 + 1000 * 2
    # Each edge 1 + its node 1 + consent 1; the default page is 100.
    edges = """{ segment(name: "s") { customers {
               edges { cursor node { consent { analytics } } } } } }"""
    assert _cost(edges) == 2 + 100 * 3
    variable = """query($n: Int!) { segment(name: "s") { customers(first: $n) {
                  nodes { consent { analytics } } } } }"""
    assert _cost(variable, n=700) == 2 + 700 * 2
    # Lists below a node keep their own sizes.
    orders = '{ segment(name: "s") { customers(first: 10) { nodes { orders(first: 3) { id } } } } }'
    assert _cost(orders) == 2 + 10 * (1 + 3)


def test_a_fragment_costs_the_page_it_is_spread_in() -> None:
    query = """{
      small: segment(name: "s") { customers(first: 1) { ...Page } }
      big: segment(name: "s") { customers(first: 1000) { ...Page } }
    }
    fragment Page on SegmentCustomers { nodes { consent { analytics } } }"""
    assert _cost(query) == (2 + 1 * 2) + (2 + 1000 * 2)
