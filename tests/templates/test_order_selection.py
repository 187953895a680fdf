"""What a template reads of the orders: never less than it renders.

The property: any template built from the ways Liquid reaches a list renders the same
with every order (and all their line items) as with only what ``order_selection``
says it reads. The examples pin the reads a send cares about (a few orders by name
and total, no line items)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from liquid import Environment

from gateway.templates.order_selection import OrderSelection, order_selection

_ENV = Environment()


def _orders(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": str(n),
            "name": f"#{1000 + n}",
            "total_price": {"amount": f"{n}.50", "currency": "EUR"},
            "line_items": [{"title": f"item {n}.{i}", "quantity": i} for i in range(1 + n % 3)],
        }
        for n in range(count)
    ]


def _render(source: str, orders: list[dict[str, Any]]) -> str:
    customer = {"orders": orders, "first_name": "Ada"}
    return _ENV.from_string(source).render(**customer, customer=customer, k="name", n=2)


def _cut(orders: list[dict[str, Any]], read: OrderSelection) -> list[dict[str, Any]]:
    kept = orders if read.first is None else orders[: read.first]
    return kept if read.line_items else [{**o, "line_items": []} for o in kept]


@pytest.mark.parametrize(
    ("source", "first", "line_items"),
    [
        (
            "{% for o in orders limit: 3 %}{{ o.name }} {{ o.total_price.amount }}{% endfor %}",
            3,
            False,
        ),
        (
            "{% for o in customer.orders limit: 2 offset: 1 reversed %}{{ o.name }}{% endfor %}",
            3,
            False,
        ),
        ("{% tablerow o in orders limit: 2 cols: 2 %}{{ o.name }}{% endtablerow %}", 2, False),
        ("{{ orders.first.name }} {{ orders[2].total_price.currency }}", 3, False),
        ("{% for o in orders limit: 3 %}{{ o.line_items.size }}{% endfor %}", 3, True),
        ("{% for o in orders limit: 3 %}{{ o }}{% endfor %}", 3, True),
        ("{% for o in orders limit: 3 %}{{ o[k] }}{% endfor %}", 3, True),
        ("{{ orders.first }}", 1, True),
        ("{% for o in orders %}{{ o.name }}{% endfor %}", None, True),
        ("{% for o in orders limit: n %}{{ o.name }}{% endfor %}", None, True),
        ("{% for o in orders limit: 2 offset: continue %}{{ o.name }}{% endfor %}", None, True),
        ("{{ orders.size }} {{ orders.last.name }}", None, True),
        ("{{ orders | map: 'name' | join }}", None, True),
        ("{{ customer }}", None, True),
        ("{{ first_name }}", 0, False),
    ],
)
def test_what_a_template_reads_of_the_orders(
    source: str, first: int | None, line_items: bool
) -> None:
    assert order_selection(_ENV.from_string(source)) == OrderSelection(first, line_items)


# Pieces of templates: the ways a template reaches the orders and what is in them.
_LOOP_HEADS = st.sampled_from(
    [
        "{% for o in orders %}",
        "{% for o in orders limit: 2 %}",
        "{% for o in customer.orders limit: 3 offset: 2 %}",
        "{% for o in orders limit: 1 reversed %}",
        "{% for o in orders limit: n %}",
        "{% for o in orders offset: 4 limit: 2 %}",
        "{% for o in orders limit: 2 offset: continue %}",
    ]
)
_ITEM_USES = st.sampled_from(
    [
        "{{ o.name }}",
        "{{ o.total_price.amount }}",
        "{{ o.line_items.size }}",
        "{% for i in o.line_items %}{{ i.title }}{% endfor %}",
        "{{ o[k] }}",
        "{{ forloop.index }}/{{ forloop.length }}",
        "{% if o.line_items.first %}x{% endif %}",
    ]
)
_OTHER_USES = st.sampled_from(
    [
        "{{ orders.first.name }}",
        "{{ orders[3].total_price.currency }}",
        "{{ orders.size }}",
        "{{ orders.last.name }}",
        "{{ customer.orders.first.line_items.size }}",
        "{{ orders | map: 'name' | join: ',' }}",
        "{% assign p = orders.first %}{{ p.line_items.size }}",
        "{{ first_name }}",
    ]
)
_LOOP = st.builds(
    lambda head, body: head + "".join(body) + "{% endfor %}",
    _LOOP_HEADS,
    st.lists(_ITEM_USES, max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.one_of(_LOOP, _OTHER_USES), min_size=1, max_size=4), count=st.integers(0, 12)
)
def test_a_template_renders_the_same_with_only_what_it_reads(pieces: list[str], count: int) -> None:
    source = " | ".join(pieces)
    read = order_selection(_ENV.from_string(source))
    orders = _orders(count)
    assert _render(source, _cut(orders, read)) == _render(source, orders)
