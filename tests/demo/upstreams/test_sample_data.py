"""The derived sample data: deterministic, consistent across services, with signal."""

from __future__ import annotations

import itertools
from collections import Counter

import httpx

from demo.people.behaviour import WINDOW, behaviour, cart
from demo.people.catalogue import CATEGORIES, catalogue
from demo.people.orders import MAX_ORDERS, orders_for
from demo.people.population import population
from demo.upstreams.credentials import (
    DEMO_HUBSPOT_TOKEN,
    DEMO_SEGMENT_SPACE,
    DEMO_SEGMENT_TOKEN,
    DEMO_SHOPIFY_TOKEN,
    DEMO_SOAP_PASSWORD,
    DEMO_SOAP_USER,
)
from demo.upstreams.runner import SampleUpstreams


def test_same_data_twice() -> None:
    """Recomputed from scratch, every derived record comes out the same."""
    people = population(30)
    first = [(orders_for(p), behaviour(p)) for p in people]
    orders_for.cache_clear()
    behaviour.cache_clear()
    assert [(orders_for(p), behaviour(p)) for p in people] == first


def test_same_answer_twice(upstreams: SampleUpstreams) -> None:
    person = upstreams.people[123]
    url = (
        f"{upstreams.base_urls['shopify']}/admin/api/2024-10/customers/"
        f"{person.shopify_id}/orders.json?status=any"
    )
    headers = {"X-Shopify-Access-Token": DEMO_SHOPIFY_TOKEN}
    with httpx.Client(headers=headers) as client:
        assert client.get(url).content == client.get(url).content


def test_one_person_is_found_by_email_everywhere(upstreams: SampleUpstreams) -> None:
    person = upstreams.people[321]
    with httpx.Client(timeout=5) as client:
        hub = client.get(
            f"{upstreams.base_urls['hubspot']}/crm/v3/objects/contacts/{person.email}",
            params={"idProperty": "email"},
            headers={"Authorization": f"Bearer {DEMO_HUBSPOT_TOKEN}"},
        ).json()
        shop = client.get(
            f"{upstreams.base_urls['shopify']}/admin/api/2024-10/customers/search.json",
            params={"query": f"email:{person.email}"},
            headers={"X-Shopify-Access-Token": DEMO_SHOPIFY_TOKEN},
        ).json()
        seg = client.get(
            f"{upstreams.base_urls['segment']}/v1/spaces/{DEMO_SEGMENT_SPACE}/"
            f"collections/users/profiles/email:{person.email}/traits",
            params={"include": "email,user_id"},
            auth=(DEMO_SEGMENT_TOKEN, ""),
        ).json()
        soap = client.post(
            f"{upstreams.base_urls['soap_crm']}/soap/contacts",
            auth=(DEMO_SOAP_USER, DEMO_SOAP_PASSWORD),
            headers={"Content-Type": "text/xml"},
            content=(
                '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
                '<GetContactByEmail xmlns="urn:gateway:sample:contacts:v1">'
                f"<email>{person.email}</email></GetContactByEmail></s:Body></s:Envelope>"
            ),
        )
    assert hub["id"] == person.hubspot_id
    assert shop["customers"][0]["id"] == person.shopify_id
    assert seg["traits"] == {"email": person.email, "user_id": person.segment_user_id}
    assert f"<tns:id>C-{person.index:06d}</tns:id>" in soap.text


def test_catalogue_shape() -> None:
    products = catalogue().products
    assert 180 <= len(products) <= 220
    assert len({p.id for p in products}) == len(products)
    assert set(Counter(p.category for p in products)) == set(CATEGORIES)
    assert {"Shoes", "Apparel", "Accessories", "Home", "Beauty", "Outdoors"} <= set(CATEGORIES)
    assert 0 < sum(p.initial_stock == 0 for p in products) < len(products) // 4


def test_orders_per_person() -> None:
    people = population(1000)
    counts = [len(orders_for(p)) for p in people]
    assert min(counts) == 0
    assert max(counts) <= MAX_ORDERS
    assert sum(counts) > 1000
    for person in people[:200]:
        orders = orders_for(person)
        assert all(a.created_at > b.created_at for a, b in itertools.pairwise(orders))
        assert all(person.created_at <= o.created_at < person.epoch for o in orders)


def test_events_sit_in_the_window_and_match_orders() -> None:
    for person in population(1000)[:300]:
        events = behaviour(person).events
        epoch = person.epoch
        assert all(epoch - WINDOW <= e.timestamp < epoch for e in events)
        completed = {e.properties["order_id"]: e for e in events if e.event == "Order Completed"}
        recent = {
            str(o.id): o
            for o in orders_for(person)
            if o.created_at >= epoch - WINDOW + WINDOW / 1440
        }
        assert set(completed) == set(recent)
        for order_id, event in completed.items():
            assert event.timestamp == recent[order_id].created_at
            assert event.properties["total"] == float(recent[order_id].total)


def test_views_follow_purchases() -> None:
    """People view the categories they buy from far more than chance would."""
    agree = total = 0
    for person in population(1000):
        bought = {i.category for o in orders_for(person) for i in o.line_items}
        if not bought:
            continue
        for event in behaviour(person).events:
            if event.event == "Product Viewed":
                total += 1
                agree += event.properties["category"] in bought
    assert total > 1000
    chance = 2 / len(CATEGORIES)  # buyers average about two categories
    assert agree / total > 2 * chance


def test_some_people_have_open_carts() -> None:
    carts = [cart(behaviour(p).events) for p in population(1000)[:300]]
    open_carts = [c for c in carts if c]
    assert 20 < len(open_carts) < 200
    assert all(pid in catalogue().by_id and qty > 0 for c in open_carts for pid, qty in c.items())
