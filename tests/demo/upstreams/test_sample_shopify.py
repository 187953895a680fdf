"""The sample Shopify Admin REST API 2024-10, as a client sees it."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from demo.people.catalogue import CATALOGUE_SIZE, catalogue
from demo.people.orders import orders_for
from demo.upstreams.runner import SampleUpstreams

_NEXT = re.compile(r'<([^>]+)>; rel="next"')


def _pages(client: httpx.Client, path: str, key: str, **params: str | int) -> list[dict[str, Any]]:
    """Follow the Link header to the end, as an adapter must."""
    items: list[dict[str, Any]] = []
    answer = client.get(path, params=params)
    while True:
        assert answer.status_code == 200, answer.text
        items += answer.json()[key]
        found = _NEXT.search(answer.headers.get("link", ""))
        if not found:
            return items
        answer = client.get(found.group(1))


def test_search_several_emails_joined_with_or(
    shopify: httpx.Client, upstreams: SampleUpstreams
) -> None:
    people = [upstreams.people[i] for i in (4, 40, 400)]
    query = " OR ".join(f"email:{p.email.upper()}" for p in people)
    answer = shopify.get("/customers/search.json", params={"query": query, "limit": 250})
    assert answer.status_code == 200
    assert re.fullmatch(r"\d+/40", answer.headers["X-Shopify-Shop-Api-Call-Limit"])
    customers = answer.json()["customers"]
    assert {c["id"] for c in customers} == {p.shopify_id for p in people}
    first = next(c for c in customers if c["id"] == people[0].shopify_id)
    orders = orders_for(people[0])
    assert first["email"] == people[0].email
    assert first["orders_count"] == len(orders)
    assert Decimal(first["total_spent"]) == sum(
        (o.total for o in orders if o.financial_status != "refunded"), Decimal("0.00")
    )
    assert first["email_marketing_consent"]["state"] in ("subscribed", "not_subscribed")
    assert first["default_address"]["country_code"] == people[0].country


def test_customer_orders_newest_first_with_consistent_totals(
    shopify: httpx.Client, upstreams: SampleUpstreams
) -> None:
    person = next(p for p in upstreams.people if len(orders_for(p)) >= 5)
    orders = shopify.get(
        f"/customers/{person.shopify_id}/orders.json", params={"status": "any", "limit": 250}
    ).json()["orders"]
    assert len(orders) == len(orders_for(person))
    assert [o["created_at"] for o in orders] == sorted(
        (o["created_at"] for o in orders), reverse=True
    )
    products = catalogue().by_id
    for order in orders:
        assert order["customer"]["id"] == person.shopify_id
        assert order["name"].startswith("#")
        lines = sum(Decimal(i["price"]) * i["quantity"] for i in order["line_items"])
        assert Decimal(order["subtotal_price"]) == lines
        assert Decimal(order["total_price"]) == lines + Decimal(order["total_tax"])
        assert all(i["product_id"] in products for i in order["line_items"])


def test_orders_json_by_ids_and_customer_id(
    shopify: httpx.Client, upstreams: SampleUpstreams
) -> None:
    person = next(p for p in upstreams.people if len(orders_for(p)) >= 3)
    ids = [o.id for o in orders_for(person)[:2]]
    by_ids = shopify.get(
        "/orders.json", params={"status": "any", "ids": ",".join(map(str, ids))}
    ).json()
    assert [o["id"] for o in by_ids["orders"]] == ids
    by_customer = shopify.get(
        "/orders.json", params={"status": "any", "customer_id": person.shopify_id}
    ).json()
    assert len(by_customer["orders"]) == len(orders_for(person))


def test_products_paginate_through_link_header(shopify: httpx.Client) -> None:
    products = _pages(shopify, "/products.json", "products", limit=60)
    assert len(products) == CATALOGUE_SIZE
    assert len({p["id"] for p in products}) == CATALOGUE_SIZE
    variant = products[0]["variants"][0]
    assert {"id", "price", "sku", "inventory_item_id", "inventory_quantity"} <= set(variant)
    assert products[0]["image"]["src"].startswith("https://")
    assert any(p["variants"][0]["inventory_quantity"] == 0 for p in products)


def test_second_page_links_back(shopify: httpx.Client) -> None:
    first = shopify.get("/products.json", params={"limit": 50})
    link = _NEXT.search(first.headers["link"])
    assert link is not None, first.headers["link"]
    second = shopify.get(link.group(1))
    assert 'rel="previous"' in second.headers["link"]
    assert 'rel="next"' in second.headers["link"]
    assert second.json()["products"][0]["id"] == catalogue().products[50].id


def test_product_type_filter_and_product_by_id(shopify: httpx.Client) -> None:
    shoes = shopify.get("/products.json", params={"product_type": "Shoes", "limit": 250}).json()[
        "products"
    ]
    assert shoes
    assert {p["product_type"] for p in shoes} == {"Shoes"}
    one = shopify.get(f"/products/{shoes[0]['id']}.json")
    assert one.json()["product"]["id"] == shoes[0]["id"]
    missing = shopify.get("/products/1.json")
    assert missing.status_code == 404
    assert missing.json() == {"errors": "Not Found"}


def test_inventory_levels_and_sample_setter(
    shopify: httpx.Client, upstreams: SampleUpstreams
) -> None:
    items = [p.inventory_item_id for p in catalogue().products[:3]]
    levels = shopify.get(
        "/inventory_levels.json", params={"inventory_item_ids": ",".join(map(str, items))}
    ).json()
    assert [lvl["inventory_item_id"] for lvl in levels["inventory_levels"]] == items
    before = upstreams.shopify.available(items[0])
    try:
        put = httpx.put(
            f"{upstreams.base_urls['shopify']}/_sample/inventory/{items[0]}", json={"available": 0}
        )
        assert put.status_code == 200
        assert put.json()["inventory_level"]["available"] == 0
        again = shopify.get(
            "/inventory_levels.json", params={"inventory_item_ids": str(items[0])}
        ).json()
        assert again["inventory_levels"][0]["available"] == 0
        product = shopify.get(f"/products/{catalogue().products[0].id}.json").json()["product"]
        assert product["variants"][0]["inventory_quantity"] == 0
    finally:
        upstreams.shopify.set_inventory(items[0], before)


def test_customers_updated_since(shopify: httpx.Client, upstreams: SampleUpstreams) -> None:
    since = upstreams.people[0].epoch - timedelta(days=17)
    customers = _pages(
        shopify, "/customers.json", "customers", limit=250, updated_at_min=since.isoformat()
    )
    assert customers
    assert all(datetime.fromisoformat(c["updated_at"]) >= since for c in customers)


def test_unauthorized_and_rate_limited(upstreams: SampleUpstreams, shopify: httpx.Client) -> None:
    refused = httpx.get(
        f"{upstreams.base_urls['shopify']}/admin/api/2024-10/products.json",
        headers={"X-Shopify-Access-Token": "shpat_wrong"},
    )
    assert refused.status_code == 401
    assert "Invalid API key" in refused.json()["errors"]
    upstreams.shopify.faults.update(rate_limit_next=1, retry_after_s=2)
    limited = shopify.get("/products.json")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "2.0"
    assert limited.headers["X-Shopify-Shop-Api-Call-Limit"] == "40/40"
    assert shopify.get("/products.json").status_code == 200
