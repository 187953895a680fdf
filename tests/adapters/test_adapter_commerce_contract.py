"""The commerce contract, over both shapes of the sample shop (Admin REST and GraphQL):
records, batching, pagination, each call counted at the shop."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.protocols import CommerceAdapter
from demo.people.catalogue import catalogue
from demo.people.orders import currency_of, orders_for, spend
from demo.upstreams.runner import SampleUpstreams

Build = Callable[..., Any]
API = "/admin/api/2024-10"
SEARCH = f"GET {API}/customers/search.json"
ORDERS = f"GET {API}/customers/{{id}}/orders.json"
PRODUCTS = f"GET {API}/products.json"
INVENTORY = f"GET {API}/inventory_levels.json"
GRAPHQL = f"POST {API}/graphql.json"
# Where each shape serves customers and orders (products and inventory: REST for both).
ENDPOINTS = {
    "shopify": {SEARCH: SEARCH, ORDERS: ORDERS},
    "shopify_graphql": {SEARCH: GRAPHQL, ORDERS: GRAPHQL},
}


@pytest.fixture(params=["shopify", "shopify_graphql"])
def variant(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def shop(build: Build, variant: str) -> CommerceAdapter:
    adapter = build(variant, page_size=50)
    assert isinstance(adapter, CommerceAdapter)
    return adapter


@pytest.fixture
def served(upstreams: SampleUpstreams, variant: str) -> Callable[[str], int]:
    """How many calls the shop served at what ``endpoint`` stands for in this shape."""

    def count(endpoint: str) -> int:
        return upstreams.shopify.calls.count(ENDPOINTS[variant].get(endpoint, endpoint))

    return count


async def test_customers_by_email_in_pages(
    shop: CommerceAdapter, upstreams: SampleUpstreams, served: Callable[[str], int], variant: str
) -> None:
    people = upstreams.people[:120]
    found = await shop.find_customers_by_email(
        [p.email.upper() for p in people] + ["nobody.at.all@example.com", people[0].email]
    )
    assert set(found) == {p.email.lower() for p in people}
    assert served(SEARCH) == math.ceil(121 / 50)  # distinct addresses
    person = people[5]
    customer = found[person.email.lower()]
    count, total = spend(person)
    assert customer.external_id == str(person.shopify_id)
    assert customer.source == variant  # the configured upstream name
    assert customer.orders_count == count
    assert customer.total_spent.amount == total
    assert customer.total_spent.currency == currency_of(person)
    assert customer.email_marketing_consent is person.email_marketing_consent
    assert customer.created_at is not None
    assert customer.created_at == person.created_at
    newest = orders_for(person)[0] if count else None
    assert customer.last_order_id == (str(newest.id) if newest else None)


async def test_orders_newest_first_with_line_items(
    shop: CommerceAdapter, upstreams: SampleUpstreams, served: Callable[[str], int]
) -> None:
    person = next(p for p in upstreams.people if len(orders_for(p)) >= 5)
    expected = orders_for(person)
    orders = await shop.fetch_orders(str(person.shopify_id), first=3)
    assert [o.external_id for o in orders] == [str(o.id) for o in expected[:3]]
    first = orders[0]
    assert first.customer_id == str(person.shopify_id)
    assert first.total_price.amount == expected[0].total
    assert first.total_price.currency == expected[0].currency
    assert first.line_items
    assert all(item.quantity >= 1 for item in first.line_items)
    assert first.line_items[0].price.currency == expected[0].currency
    assert [o.created_at for o in orders] == sorted((o.created_at for o in orders), reverse=True)
    assert served(ORDERS) == 1


async def test_first_beyond_the_history_returns_it_all(
    shop: CommerceAdapter, upstreams: SampleUpstreams, served: Callable[[str], int]
) -> None:
    person = next(p for p in upstreams.people if len(orders_for(p)) >= 8)
    orders = await shop.fetch_orders(str(person.shopify_id), first=300)
    assert len(orders) == len(orders_for(person))
    assert served(ORDERS) == 1  # limit capped at Shopify's 250


async def test_unknown_customer_has_no_orders(shop: CommerceAdapter) -> None:
    assert await shop.fetch_orders("1") == []
    assert await shop.fetch_orders("1", first=0) == []


async def test_whole_catalogue_through_link_pagination(
    shop: CommerceAdapter, upstreams: SampleUpstreams, served: Callable[[str], int]
) -> None:
    products = await shop.fetch_products()
    everything = catalogue().products
    assert len(products) == len(everything)
    assert served(PRODUCTS) == math.ceil(len(everything) / 50)
    one, source = products[0], everything[0]
    assert one.external_id == str(source.id)
    assert one.handle == source.handle
    assert one.category == source.category
    assert one.price is not None
    assert one.price.amount == source.price
    assert one.url == f"https://shop.example/products/{source.handle}"
    assert one.image_url == source.image_url
    assert one.inventory_item_id == str(source.inventory_item_id)


async def test_products_by_id_in_pages(
    shop: CommerceAdapter, upstreams: SampleUpstreams, served: Callable[[str], int]
) -> None:
    wanted = [str(p.id) for p in catalogue().products[:120]] + ["1"]
    products = await shop.fetch_products(wanted)
    assert {p.external_id for p in products} == set(wanted[:-1])
    assert served(PRODUCTS) == math.ceil(121 / 50)


async def test_inventory_levels_follow_stock_changes(
    shop: CommerceAdapter, upstreams: SampleUpstreams, served: Callable[[str], int]
) -> None:
    items = [p.inventory_item_id for p in catalogue().products[:60]]
    upstreams.shopify.set_inventory(items[0], 3)
    try:
        levels = await shop.fetch_inventory([str(i) for i in items])
        assert set(levels) == {str(i) for i in items}
        assert [level.available for level in levels[str(items[0])]] == [3]
        assert served(INVENTORY) == math.ceil(60 / 50)
    finally:
        upstreams.shopify.set_inventory(items[0], catalogue().products[0].initial_stock)


def test_money_is_decimal() -> None:
    from adapters.records import Money

    assert Money(amount=Decimal("12.30"), currency="EUR").amount == Decimal("12.3")
    with pytest.raises(ValidationError, match="currency"):
        Money(amount=Decimal(1), currency="euro")
