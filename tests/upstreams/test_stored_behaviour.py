"""Behaviour served from the store, on both databases: ``recentEvents``, ``engagement``
and ``cart`` read from the stored Segment calls answer what the analytics upstream
answers for the same events, for a whole batch in a bounded number of queries and no
upstream call; merged customers bring every identity's events, erased ones nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from adapters.config import load_upstreams
from demo.people.behaviour import behaviour
from demo.seed import customer_id_for
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import DEMO_SECRETS, example_upstreams
from gateway.settings import load_settings
from gateway.upstreams.behaviour import ENGAGEMENT_WINDOW, Engagement, engagement
from gateway.upstreams.event_store import EventStore
from resolvers.app import create_app
from tests.conftest import (
    FAST,
    api_client,
    recorded_statements,
    unique_email,
)
from tests.demo_database import demo_database
from tests.gql_client import gql
from tests.in_process import lifespan, services_of
from tests.ingest.webhook_requests import realtime_app, segment_request
from tests.upstreams.stored_calls import customer_with_events

STORE = {"recent_events": "store", "engagement": "store", "cart": "store"}
UPSTREAM = {"recent_events": "upstream", "engagement": "upstream", "cart": "upstream"}
EVENT = "id type name occurredAt sessionId properties"
BEHAVIOUR = f"""
query($ids: [ID!]) {{ customers(ids: $ids) {{
  id
  recentEvents(first: 100) {{ {EVENT} }}
  added: recentEvents(first: 3, type: "Product Added") {{ {EVENT} }}
  engagement {{ sessions30d pageViews30d lastSeenAt }}
  cart {{ items {{ productId title quantity price }} subtotal updatedAt }}
}} }}"""
RECENT = "query($ids: [ID!]) { customers(ids: $ids) { id recentEvents(first: 5) { id } } }"
Gateway = Callable[..., Any]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def behaviour_url(
    request: pytest.FixtureRequest,
    samples: SampleUpstreams,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A database of its own holding the sample population and every Segment call of
    theirs, stored as the Segment webhook and the event stream store them."""
    with demo_database(
        request.param, "behaviour", samples.people, tmp_path_factory, model=False
    ) as url:
        yield url


@pytest.fixture
def gateway(samples: SampleUpstreams, behaviour_url: str) -> Iterator[Gateway]:
    """In-process gateways on that database, the behavioural fields read from where
    ``fields`` says; yields (client, app)."""
    samples.reset()

    @asynccontextmanager
    async def instance(fields: dict[str, str]) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
        raw = example_upstreams()
        for name, table in raw["upstreams"].items():
            table.update(FAST, base_url=samples.base_urls[name])
        # The upstream path makes one call per customer of the batch: give them time.
        raw["upstreams"]["segment"].update(timeout_s=10.0, deadline_s=30.0)
        raw["fields"] = fields
        app = create_app(
            load_settings(database_url=behaviour_url, cache_url="memory://"),
            upstreams=load_upstreams(raw, DEMO_SECRETS),
        )
        async with lifespan(app), api_client(app) as client:
            yield client, app

    yield instance
    samples.reset()


def _ids(samples: SampleUpstreams, most_events: int = 100) -> list[str]:
    """The people whose every event the upstream path reads (one page of 100)."""
    return [
        str(customer_id_for(p))
        for p in samples.people
        if 0 < len(behaviour(p).events) <= most_events
    ]


async def _customers(client: httpx.AsyncClient, query: str, ids: list[str]) -> list[Any]:
    answer = await gql(client, query, ids=ids)
    assert "errors" not in answer, answer["errors"]
    customers: list[Any] = answer["data"]["customers"]
    return customers


async def test_fields_served_from_the_store_answer_what_the_upstream_path_answers(
    gateway: Gateway, samples: SampleUpstreams
) -> None:
    ids = _ids(samples)
    async with gateway(UPSTREAM) as (client, _):
        upstream = await _customers(client, BEHAVIOUR, ids)
        assert samples.segment.calls.total >= len(ids)  # one call per customer, or more
    samples.reset()
    async with gateway(STORE) as (client, _):
        stored = await _customers(client, BEHAVIOUR, ids)
    assert samples.segment.calls.total == 0
    assert stored == upstream
    # The comparison covers what matters: events, filtered events, carts, consent.
    assert sum(len(c["recentEvents"]) for c in stored) > 20 * len(ids)
    assert any(c["added"] for c in stored)
    assert any(c["cart"] for c in stored)
    assert any(not c["recentEvents"] for c in stored), "someone without consent sees nothing"


async def test_a_batch_reads_behaviour_in_one_query_per_field_and_calls_no_upstream(
    gateway: Gateway, samples: SampleUpstreams
) -> None:
    ids = [str(customer_id_for(p)) for p in samples.people]
    async with gateway(STORE) as (client, app):
        engine = services_of(app).engine.sync_engine
        counted = []
        for batch in (ids[:10], ids):
            with recorded_statements(engine) as statements:
                await _customers(client, BEHAVIOUR, batch)
            counted.append([s for s in statements if "FROM events" in s])
    # recentEvents (both selections: one depth), engagement, cart: three, at any size.
    assert [len(c) for c in counted] == [3, 3]
    assert samples.segment.calls.total == 0


async def test_email_engagement_is_one_more_query_for_a_whole_batch(
    gateway: Gateway, samples: SampleUpstreams
) -> None:
    ids = [str(customer_id_for(p)) for p in samples.people]
    emails = BEHAVIOUR.replace("lastSeenAt }", "lastSeenAt emailOpens30d emailClicks30d }")
    async with gateway(STORE) as (client, app):
        engine = services_of(app).engine.sync_engine
        counted = []
        for batch in (ids[:10], ids):
            with recorded_statements(engine) as statements:
                await _customers(client, emails, batch)
            counted.append([s for s in statements if "FROM events" in s])
    assert [len(c) for c in counted] == [4, 4]


async def test_sources_show_the_store(gateway: Gateway, samples: SampleUpstreams) -> None:
    [customer_id] = _ids(samples)[:1]
    query = "query($id: ID!) { customer(id: $id) { %s sources { upstream kind status } } }"
    async with gateway(STORE) as (client, _):
        asked = await gql(client, query % "engagement { lastSeenAt }", id=customer_id)
        not_asked = await gql(client, query % "email", id=customer_id)
    status = {s["upstream"]: s["status"] for s in asked["data"]["customer"]["sources"]}
    assert status["store"] == "OK"
    assert status["segment"] == "SKIPPED"
    skipped = {s["upstream"]: s["status"] for s in not_asked["data"]["customer"]["sources"]}
    assert skipped["store"] == "SKIPPED"


async def test_a_merged_customer_shows_the_events_of_every_identity(
    gateway: Gateway, behaviour_url: str
) -> None:
    now = datetime.now(UTC)
    async with gateway(STORE) as (client, _):
        kept = await customer_with_events(
            client, behaviour_url, [("Product Viewed", now - timedelta(days=1), "s1")]
        )
        folded = await customer_with_events(
            client,
            behaviour_url,
            [
                ("Product Added", now - timedelta(hours=2), "s2"),
                ("Product Viewed", now - timedelta(days=40), "s0"),
            ],
        )
        merged = await gql(
            client,
            'mutation($a: ID!, $b: ID!) { mergeCustomers(into: $a, from: $b, reason: "same") '
            "{ id } }",
            a=kept,
            b=folded,
        )
        assert "errors" not in merged, merged
        [customer] = await _customers(client, BEHAVIOUR, [kept])
    assert [e["name"] for e in customer["recentEvents"]] == [
        "Product Added",
        "Product Viewed",
        "Product Viewed",
    ]
    # Sessions of both within 30 days; last seen: the folded one's newest call.
    assert customer["engagement"]["sessions30d"] == 2
    assert customer["engagement"]["lastSeenAt"].startswith(
        (now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    )
    assert customer["cart"]["items"] == [
        {"productId": "p1", "title": None, "quantity": 1, "price": "5"}
    ]


async def test_an_erased_customer_has_no_behaviour_left(
    gateway: Gateway, behaviour_url: str
) -> None:
    now = datetime.now(UTC)
    async with gateway(STORE) as (client, app):
        customer_id = await customer_with_events(
            client, behaviour_url, [("Product Added", now - timedelta(hours=1), "s1")]
        )
        [before] = await _customers(client, RECENT, [customer_id])
        assert len(before["recentEvents"]) == 1
        erased = await gql(
            client, "mutation($id: ID!) { forgetCustomer(id: $id) { customerId } }", id=customer_id
        )
        assert "errors" not in erased, erased
        assert await _customers(client, RECENT, [customer_id]) == [None]
        store = EventStore(services_of(app).engine)
        assert await store.recent([uuid.UUID(customer_id)], 10) == {}


async def test_without_personalisation_consent_the_store_serves_no_history(
    gateway: Gateway, behaviour_url: str
) -> None:
    now = datetime.now(UTC)
    async with gateway(STORE) as (client, _):
        customer_id = await customer_with_events(
            client, behaviour_url, [("Product Added", now - timedelta(hours=1), "s1")]
        )
        await gql(
            client,
            "mutation($id: ID!) { setConsent(customerId: $id, purpose: PERSONALISATION, "
            "granted: false) { granted } }",
            id=customer_id,
        )
        [customer] = await _customers(client, BEHAVIOUR, [customer_id])
    assert customer["recentEvents"] == []
    assert customer["cart"] is None
    assert customer["engagement"] == {"sessions30d": 0, "pageViews30d": 0, "lastSeenAt": None}


async def test_recent_events_reads_as_many_as_first_asks_literal_or_variable(
    gateway: Gateway, behaviour_url: str
) -> None:
    now = datetime.now(UTC)
    calls = [(name, now - timedelta(minutes=i), "s1") for i, name in enumerate("ABC")]
    async with gateway(STORE) as (client, _):
        customer_id = await customer_with_events(client, behaviour_url, calls)
        literal = await gql(
            client,
            "query($id: ID!) { customer(id: $id) { recentEvents(first: 1) { name } } }",
            id=customer_id,
        )
        variable = await gql(
            client,
            "query($id: ID!, $n: Int!) { customer(id: $id) { recentEvents(first: $n) { name } } }",
            id=customer_id,
            n=2,
        )
    assert literal["data"]["customer"]["recentEvents"] == [{"name": "A"}]
    assert variable["data"]["customer"]["recentEvents"] == [{"name": "A"}, {"name": "B"}]


async def test_a_call_the_segment_webhook_stored_is_served_from_the_store(
    samples: SampleUpstreams, behaviour_url: str
) -> None:
    raw = example_upstreams()
    for name, table in raw["upstreams"].items():
        table.update(FAST, base_url=samples.base_urls[name])
    raw["fields"] = STORE
    app = realtime_app(
        load_settings(database_url=behaviour_url, cache_url="memory://"),
        upstreams=load_upstreams(raw, DEMO_SECRETS),
    )
    user_id = f"user-{uuid.uuid4().hex[:12]}"
    call = {
        "type": "track",
        "event": "Product Added",
        "messageId": str(uuid.uuid4()),
        "userId": user_id,
        "timestamp": datetime.now(UTC).isoformat(),
        "traits": {"email": unique_email("webhook")},
        "properties": {"product_id": "sku-1", "name": "Lamp", "price": 12.5, "quantity": 2},
    }
    async with lifespan(app), api_client(app) as client:
        answer = await client.post(**segment_request(call))
        assert answer.status_code == 200, answer.text
        customer_id = answer.json()["events"][0]["customerId"]
        await gql(
            client,
            "mutation($id: ID!) { setConsent(customerId: $id, purpose: PERSONALISATION, "
            "granted: true) { granted } }",
            id=customer_id,
        )
        [customer] = await _customers(client, BEHAVIOUR, [customer_id])
    assert [(e["type"], e["name"], e["id"]) for e in customer["recentEvents"]] == [
        ("track", "Product Added", call["messageId"])
    ]
    assert customer["cart"]["items"] == [
        {"productId": "sku-1", "title": "Lamp", "quantity": 2, "price": "12.5"}
    ]


async def test_engagement_counted_by_the_database_is_behaviour_engagement_of_the_same_calls(
    gateway: Gateway, behaviour_url: str
) -> None:
    """The store counts engagement in SQL; ``behaviour.engagement`` over the same calls
    (read back as records) is the definition it must match, at the window's edges too."""
    now = datetime.now(UTC)
    day = timedelta(days=1)
    histories = [
        [("Product Viewed", now - day, "s1"), ("Product Added", now - 2 * day, "s1")],
        [("Product Viewed", now - 29 * day, "s1"), ("Product Viewed", now - 31 * day, "s2")],
        [("Product Viewed", now - 45 * day, "old")],  # nothing in the window: last seen only
        [("Page Viewed", now - day, ""), ("Order Completed", now - 3 * day, "s9")],
        [],
    ]
    async with gateway(STORE) as (client, app):
        ids = [
            uuid.UUID(await customer_with_events(client, behaviour_url, calls))
            for calls in histories
        ]
        store = EventStore(services_of(app).engine)
        counted = await store.engagement(ids, now - ENGAGEMENT_WINDOW)
        events = await store.recent(ids, 1000)
    for customer_id in ids:
        expected = engagement(events.get(customer_id, []), now)
        found = counted.get(customer_id, Engagement(0, 0, None))
        assert found == expected, customer_id
    assert [counted[i].sessions for i in ids[:4]] == [1, 1, 0, 1]  # "" is no session
    assert counted[ids[3]].page_views == 1


async def test_events_read_without_their_properties_are_the_same_events(
    gateway: Gateway, samples: SampleUpstreams
) -> None:
    ids = _ids(samples)
    head = "query($ids: [ID!]) { customers(ids: $ids) { id recentEvents(first: 5) "
    bare = head + "{ id name occurredAt } } }"
    # Properties asked, directly or through a fragment: the store reads them.
    detailed = head + "{ id name occurredAt properties sessionId } } }"
    fragment = head + "{ id name occurredAt ...Detail } } } fragment Detail on Event { properties }"
    async with gateway(STORE) as (client, _):
        without = await _customers(client, bare, ids)
        full = await _customers(client, detailed, ids)
        through = await _customers(client, fragment, ids)
    shown = ("id", "name", "occurredAt")
    for answer in (full, through):
        assert [[{k: e[k] for k in shown} for e in c["recentEvents"]] for c in answer] == [
            c["recentEvents"] for c in without
        ]
    assert any(e["properties"] and e["sessionId"] for c in full for e in c["recentEvents"])
    assert any(e["properties"] for c in through for e in c["recentEvents"])
