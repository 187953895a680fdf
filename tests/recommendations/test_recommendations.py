"""Recommendations end to end: demo history stored as events, `recs build`, then the
GraphQL field and the HTTP endpoint against the sample shop, on SQLite and Postgres."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from demo.people.behaviour import behaviour
from demo.people.catalogue import catalogue
from demo.people.orders import orders_for
from demo.people.population import Person
from demo.seed import customer_id_for, seed
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.access.api_keys import Scope
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.conftest import (
    FAST,
    bearer,
    issue_key,
    recorded_statements,
)
from tests.demo_database import demo_database
from tests.gql_client import gql
from tests.in_process import asgi, lifespan, services_of

QUERY = """
query Recs($id: ID, $limit: Int, $category: String, $exclude: Boolean) {
  customer(id: $id) {
    recommendations(limit: $limit, category: $category, excludePurchased: $exclude) {
      id title price { amount currency } imageUrl url category score reason
    }
  }
}
"""
BEHAVIOUR_REASONS = ("because you bought ", "because you viewed ")
INVENTORY = "GET /admin/api/2024-10/inventory_levels.json"


@dataclass
class Running:
    app: Starlette
    client: httpx.AsyncClient
    samples: SampleUpstreams


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def built_url(
    request: pytest.FixtureRequest,
    samples: SampleUpstreams,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A database with the sample people, their history as events, and a built model."""
    with demo_database(request.param, "recs", samples.people, tmp_path_factory) as url:
        yield url


@pytest.fixture
async def running(built_url: str, samples: SampleUpstreams) -> AsyncIterator[Running]:
    samples.reset()
    tables = {name: dict(FAST) for name in samples.base_urls}
    app = create_app(
        load_settings(database_url=built_url, cache_url="memory://"),
        upstreams=sample_upstreams_config(samples.base_urls, tables),
    )
    async with lifespan(app):
        key = await issue_key(app)
        transport = asgi(app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers=bearer(key)
        ) as client:
            yield Running(app, client, samples)
    samples.reset()


def _person(samples: SampleUpstreams, *, consent: bool, history: bool = True) -> Person:
    for person in samples.people:
        has_history = bool(orders_for(person)) and bool(behaviour(person).events)
        quiet = not orders_for(person) and not behaviour(person).events
        if person.personalisation_consent == consent and (has_history if history else quiet):
            return person
    raise LookupError("no such person in the sample population")


async def _recommend(client: httpx.AsyncClient, person: Person, **args: Any) -> list[Any]:
    body = await gql(client, QUERY, id=str(customer_id_for(person)), **args)
    assert "errors" not in body, body
    found: list[Any] = body["data"]["customer"]["recommendations"]
    return found


def _untracked(items: list[Any]) -> list[Any]:
    """The items as products, without what each served list has of its own (its id, and
    the tracking parameter naming it in each link)."""
    return [{**item, "url": item["url"].split("?gw_rec=")[0]} for item in items]


def _stock(samples: SampleUpstreams, product_id: str) -> int:
    product = catalogue().by_id[int(product_id)]
    return samples.shopify.available(product.inventory_item_id)


def _purchased(person: Person) -> set[str]:
    return {str(item.product_id) for order in orders_for(person) for item in order.line_items}


async def test_seeded_customer_gets_in_stock_products_with_reasons(running: Running) -> None:
    person = _person(running.samples, consent=True)
    found = await _recommend(running.client, person, limit=6)
    assert len(found) == 6
    assert len({item["id"] for item in found}) == 6
    for item in found:
        assert _stock(running.samples, item["id"]) > 0
        assert item["title"]
        assert item["url"].startswith("https://shop.example/products/")
        assert item["imageUrl"].endswith(".jpg")
        assert float(item["price"]["amount"]) > 0
        assert item["reason"]
    assert any(item["reason"].startswith(BEHAVIOUR_REASONS) for item in found)


async def test_out_of_stock_product_disappears_after_invalidation(running: Running) -> None:
    person = _person(running.samples, consent=True)
    first = (await _recommend(running.client, person, limit=4))[0]
    product = catalogue().by_id[int(first["id"])]
    before = running.samples.shopify.available(product.inventory_item_id)
    running.samples.shopify.set_inventory(product.inventory_item_id, 0)
    try:
        # Still cached: the short TTL has not run out and nobody invalidated.
        cached = await _recommend(running.client, person, limit=4)
        assert first["id"] in {item["id"] for item in cached}
        await services_of(running.app).recommendations.catalogue.invalidate_stock([first["id"]])
        after = await _recommend(running.client, person, limit=4)
        assert first["id"] not in {item["id"] for item in after}
        assert len(after) == 4
    finally:
        running.samples.shopify.set_inventory(product.inventory_item_id, before)
        await services_of(running.app).recommendations.catalogue.invalidate_stock()


async def test_expired_stock_is_fetched_once_for_many_concurrent_requests(
    running: Running,
) -> None:
    person = _person(running.samples, consent=True)
    first = await _recommend(running.client, person, limit=4)
    await services_of(running.app).recommendations.catalogue.invalidate_stock()
    inventory = running.samples.shopify.calls
    before = inventory.count(INVENTORY)
    found = await asyncio.gather(*(_recommend(running.client, person, limit=4) for _ in range(20)))
    assert all(_untracked(items) == _untracked(first) for items in found)
    assert inventory.count(INVENTORY) - before == 1


async def test_expired_memos_are_read_once_for_many_concurrent_requests(
    running: Running,
) -> None:
    person = _person(running.samples, consent=True)
    body = {"customer_id": str(customer_id_for(person)), "limit": 4}

    async def recommend() -> Any:
        response = await running.client.post("/api/recommendations", json=body)
        assert response.status_code == 200, response.text
        return response.json()["recommendations"]

    first = await recommend()
    services = services_of(running.app)
    services.recommendations.forget()  # as when the memos' time to live runs out
    with recorded_statements(services.engine.sync_engine) as statements:
        found = await asyncio.gather(*(recommend() for _ in range(20)))
    consents = [s for s in statements if "FROM consents" in s]
    lists = [s for s in statements if "FROM recommendation_lists" in s]
    assert all(_untracked(items) == _untracked(first) for items in found)
    assert len(consents) == 1, statements
    assert len(lists) == 1, statements


async def test_purchased_products_are_excluded(running: Running) -> None:
    buyers = [p for p in running.samples.people if p.personalisation_consent and orders_for(p)]
    for person in buyers[:5]:
        found = await _recommend(running.client, person, limit=8)
        assert not {item["id"] for item in found} & _purchased(person)


async def test_send_time_purchase_is_excluded_and_browsing_names_its_product(
    running: Running,
) -> None:
    person = _person(running.samples, consent=True)
    customer_id = str(customer_id_for(person))
    response = await running.client.post(
        "/api/recommendations", json={"customer_id": customer_id, "limit": 4}
    )
    assert response.status_code == 200, response.text
    top = response.json()["recommendations"][0]["product_id"]
    viewed = next(p for p in catalogue().products if p.initial_stock > 0)
    response = await running.client.post(
        "/api/recommendations",
        json={
            "customer_id": customer_id,
            "limit": 4,
            "context": {"browsing_history": [str(viewed.id)], "purchase_history": [top]},
        },
    )
    body = response.json()
    assert response.status_code == 200
    assert body["personalised"] is True
    ids = [item["product_id"] for item in body["recommendations"]]
    assert top not in ids
    assert len(ids) == len(set(ids)) == 4
    assert f"because you viewed {viewed.title}" in {
        item["reason"] for item in body["recommendations"]
    }


async def test_cold_start_customer_gets_popular_in_stock_products(running: Running) -> None:
    person = _person(running.samples, consent=True, history=False)
    found = await _recommend(running.client, person, limit=4)
    assert len(found) == 4
    assert {item["reason"] for item in found} <= {"trending"} | {
        f"popular in {c}" for c in {p.category for p in catalogue().products}
    }
    assert all(_stock(running.samples, item["id"]) > 0 for item in found)


async def test_without_personalisation_consent_only_popularity(running: Running) -> None:
    refused = _person(running.samples, consent=False)
    found = await _recommend(running.client, refused, limit=6)
    assert len(found) == 6
    assert not any(item["reason"].startswith(BEHAVIOUR_REASONS) for item in found)
    assert all(item["reason"] == "trending" for item in found)
    # The same answer as for anyone without history, less what they bought.
    cold = await _recommend(
        running.client, _person(running.samples, consent=True, history=False), limit=20
    )
    expected = [item["id"] for item in cold if item["id"] not in _purchased(refused)][:6]
    assert [item["id"] for item in found] == expected
    # A send-time context is behaviour too: ignored without consent.
    response = await running.client.post(
        "/api/recommendations",
        json={
            "customer_id": str(customer_id_for(refused)),
            "limit": 6,
            "context": {"browsing_history": [item["id"] for item in cold[:3]]},
        },
    )
    body = response.json()
    assert body["personalised"] is False
    assert [item["product_id"] for item in body["recommendations"]] == expected


async def test_category_filter(running: Running) -> None:
    person = _person(running.samples, consent=True)
    found = await _recommend(running.client, person, limit=4, category="Shoes")
    assert len(found) == 4
    assert {item["category"] for item in found} == {"Shoes"}
    assert {catalogue().by_id[int(item["id"])].category for item in found} == {"Shoes"}


async def test_endpoint_errors_name_the_field(running: Running) -> None:
    post = running.client.post
    malformed = await post(
        "/api/recommendations", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    bad_limit = await post(
        "/api/recommendations", json={"customer_id": str(uuid.uuid4()), "limit": 0}
    )
    assert bad_limit.status_code == 422
    assert bad_limit.json()["field"] == "limit"
    bad_id = await post("/api/recommendations", json={"customer_id": "someone"})
    assert bad_id.status_code == 422
    assert bad_id.json()["field"] == "customer_id"
    bad_context = await post(
        "/api/recommendations",
        json={"customer_id": str(uuid.uuid4()), "context": {"browsing_history": "x"}},
    )
    assert bad_context.status_code == 422
    assert bad_context.json()["field"] == "context.browsing_history"
    unknown = await post("/api/recommendations", json={"customer_id": str(uuid.uuid4())})
    assert unknown.status_code == 404
    assert unknown.json()["field"] == "customer_id"


async def test_endpoint_needs_an_api_key(running: Running) -> None:
    transport = asgi(running.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as anonymous:
        response = await anonymous.post(
            "/api/recommendations", json={"customer_id": str(uuid.uuid4())}
        )
    assert response.status_code == 401


async def test_graphql_limit_out_of_range_is_a_field_error(running: Running) -> None:
    person = _person(running.samples, consent=True)
    body = await gql(running.client, QUERY, id=str(customer_id_for(person)), limit=0)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert body["errors"][0]["extensions"]["field"] == "limit"


def test_recs_build_command_stores_lists_from_stored_events(
    tmp_path_factory: pytest.TempPathFactory, samples: SampleUpstreams
) -> None:
    from click.testing import CliRunner
    from sqlalchemy import func, select

    from gateway.cli import main
    from gateway.db.recommendation_models import RecommendationItem, RecommendationList

    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('recs-cli') / 'cli.db'}"
    upgrade(url)
    people = samples.people[:60]

    async def seeded() -> None:
        engine = create_engine(url)
        await seed(create_sessionmaker(engine), people)
        await engine.dispose()

    asyncio.run(seeded())
    result = CliRunner().invoke(
        main, ["recs", "build", "--database-url", url, "--demo-history", "60"]
    )
    assert result.exit_code == 0, result.output
    assert "stored" in result.output
    assert "lists" in result.output

    async def counts() -> tuple[int, int]:
        engine = create_engine(url)
        async with create_sessionmaker(engine)() as session:
            lists = await session.scalar(select(func.count()).select_from(RecommendationList))
            items = await session.scalar(select(func.count()).select_from(RecommendationItem))
        await engine.dispose()
        return int(lists or 0), int(items or 0)

    lists, items = asyncio.run(counts())
    with_history = [p for p in people if orders_for(p) or behaviour(p).events]
    assert lists == len(with_history)
    assert items > 50


async def test_the_endpoint_needs_profiles_read_and_each_answer_is_audited(
    running: Running,
) -> None:
    person = _person(running.samples, consent=True)
    customer_id = str(customer_id_for(person))
    body = {"customer_id": customer_id, "limit": 4}
    app = running.app
    transport = asgi(app)
    writer = await issue_key(app, Scope.PROFILES_WRITE)
    reader = await issue_key(app, Scope.PROFILES_READ)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        refused = await http.post("/api/recommendations", json=body, headers=bearer(writer))
        answered = await http.post("/api/recommendations", json=body, headers=bearer(reader))
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "forbidden"
    assert "profiles:read" in refused.json()["message"]
    assert "recommendations" not in refused.json()
    assert answered.status_code == 200, answered.text
    assert answered.json()["recommendations"], answered.text

    audit = services_of(app).audit
    entries = await audit.query(customer_id=customer_id_for(person), limit=1000)
    mine = [e for e in entries if e.operation == "api:recommendations"]
    reader_as, writer_as = [
        await services_of(app).api_keys.authenticate(k) for k in (reader, writer)
    ]
    assert reader_as is not None
    assert writer_as is not None
    reader_name, writer_name = reader_as.name, writer_as.name
    assert [(e.actor, e.action) for e in mine if e.actor in {reader_name, writer_name}] == [
        (reader_name, "read")
    ]
