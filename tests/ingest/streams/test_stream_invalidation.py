"""What a committed batch drops from the upstream cache: a customer whose calls were
only behaviour (track, page) loses the analytics upstream's cached answer, which those
calls made stale, and keeps the CRM's and the shop's; an identify drops them all."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from demo.wiring import example_upstreams, sample_upstreams_config
from gateway.db.migrate import upgrade
from gateway.ingest.streams.customer_updates import CustomerUpdates
from gateway.ingest.streams.event_batches import CustomerTouch
from gateway.ingest.streams.running import ConsumerParts
from gateway.settings import load_settings
from gateway.upstreams.cache import Entry

# Each sample upstream's cached answers, by namespace (the shop keeps two: customer, orders).
NAMESPACES = {"hubspot": "crm", "shopify": "commerce", "shopify.orders": "commerce"}
ANALYTICS = "segment"


@pytest.fixture(scope="module")
def migrated(postgres_url: str) -> str:
    upgrade(postgres_url)
    return postgres_url


@pytest.fixture
async def parts(migrated: str) -> AsyncIterator[ConsumerParts]:
    upstreams = sample_upstreams_config(
        dict.fromkeys(example_upstreams()["upstreams"], "http://127.0.0.1:9")
    )
    opened = ConsumerParts.open(
        load_settings(database_url=migrated, cache_url="memory://"), upstreams
    )
    try:
        yield opened
    finally:
        await opened.engine.dispose()


async def _cached(parts: ConsumerParts, customer: uuid.UUID) -> set[str]:
    found = set()
    for namespace in [*NAMESPACES, ANALYTICS]:
        if await parts.cache.get_many(namespace, [customer]):
            found.add(namespace)
    return found


async def test_behaviour_drops_the_analytics_answer_and_an_identify_drops_all(
    parts: ConsumerParts,
) -> None:
    browsing, identified = uuid.uuid4(), uuid.uuid4()
    for namespace in [*NAMESPACES, ANALYTICS]:
        entry = Entry(value=None, fetched_at=datetime.now(UTC))
        await parts.cache.set_many(namespace, {browsing: entry, identified: entry}, 300)
    assert await _cached(parts, browsing) == {*NAMESPACES, ANALYTICS}
    updates = CustomerUpdates(parts.federation, parts.customers, parts.notifications)
    await updates(
        {
            browsing: CustomerTouch(fields={"recent_events", "engagement"}),
            identified: CustomerTouch(fields={"email"}, profile_changed=True),
        }
    )
    assert await _cached(parts, browsing) == set(NAMESPACES)
    assert await _cached(parts, identified) == set()
