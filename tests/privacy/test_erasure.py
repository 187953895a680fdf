"""A forgotten customer is gone from every read and cache, on every instance, and is not
brought back by a webhook, a sync or the API.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from adapters.registry import aclose_adapters, build_adapters
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Customer, Event
from gateway.ingest.sync import sync
from gateway.privacy.tombstones import Tombstones
from tests.conftest import (
    FAST,
    clean_redis,
    redis_database_url,
)
from tests.gql_client import error_codes
from tests.in_process import services_of
from tests.ingest.webhook_requests import (
    hubspot_change,
    hubspot_request,
    segment_request,
    shopify_request,
)
from tests.privacy.instances import BASE, BEHAVIOUR, FORGET, count_rows, person_for

REDIS_URL = redis_database_url(15)


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    async with clean_redis(REDIS_URL) as url:
        yield url


async def test_a_forgotten_customer_is_gone_and_stays_gone(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    person = person_for(samples, privacy_url, real_domain=True)
    hubspot_id, shopify_id = person.hubspot_id, person.shopify_id
    async with instance() as gw:
        found = await gw.gql(BEHAVIOUR, email=person.email)  # read, and cached
        customer_id = found["data"]["customer"]["id"]
        customers = await count_rows(privacy_url, Customer)

        recs = {"customer_id": customer_id, "limit": 4}
        assert (await gw.http.post("/api/recommendations", json=recs)).status_code == 200
        erased = await gw.gql(FORGET, id=customer_id)
        assert "errors" not in erased, erased
        summary = erased["data"]["forgetCustomer"]
        assert summary["customerId"] == customer_id
        assert summary["identities"] >= 2
        assert summary["consents"] == 3
        assert summary["tombstones"] >= summary["identities"] + 1  # ids and the email

        by_email = await gw.gql(BEHAVIOUR, email=person.email)
        by_id = await gw.gql("query($id: ID!) { customer(id: $id) { id } }", id=customer_id)
        by_identity = await gw.gql(
            "query($i: String!) { customer(identity: $i) { id } }", i=f"hubspot:{hubspot_id}"
        )
        assert by_email == {"data": {"customer": None}}
        assert by_id == {"data": {"customer": None}}
        assert by_identity == {"data": {"customer": None}}
        assert (await gw.http.post("/api/recommendations", json=recs)).status_code == 404

        # Replayed webhooks naming the person are acknowledged and write nothing.
        events = await count_rows(privacy_url, Event)
        shopify = await gw.http.post(
            **shopify_request(
                {"id": int(shopify_id), "email": person.email, "first_name": "Back"},
                topic="customers/create",
            )
        )
        by_new_shop_id = await gw.http.post(
            **shopify_request({"id": uuid.uuid4().int % 10**12 + 1, "email": person.email})
        )
        hubspot = await gw.http.post(
            **hubspot_request([hubspot_change(int(hubspot_id), "firstname", "Back")], BASE)
        )
        hubspot_by_email = await gw.http.post(
            **hubspot_request(
                [hubspot_change(uuid.uuid4().int % 10**12 + 1, "email", person.email)], BASE
            )
        )
        track = await gw.http.post(
            **segment_request(
                {
                    "type": "track",
                    "messageId": str(uuid.uuid4()),
                    "userId": person.segment_user_id,
                    "event": "Product Viewed",
                    "properties": {"sku": "A-1"},
                }
            )
        )
        replays = {
            "shopify": shopify,
            "shopify, new id": by_new_shop_id,
            "hubspot": hubspot,
            "hubspot, new id": hubspot_by_email,
            "segment track": track,
        }
        for what, response in replays.items():
            assert response.status_code == 200, (what, response.text)
            statuses = [e["status"] for e in response.json()["events"]]
            assert statuses == ["erased"], (what, person.index, response.text)
        assert await count_rows(privacy_url, Customer) == customers - 1
        assert await count_rows(privacy_url, Event) == events

        # The API will not re-create the person either.
        upsert = await gw.gql(
            'mutation($e: String!) { upsertCustomer(input: {email: $e, firstName: "Back"}) '
            "{ id } }",
            e=person.email.upper(),
        )
        assert error_codes(upsert) == [("ERASED", ["upsertCustomer"])]
        assert (await gw.gql(BEHAVIOUR, email=person.email))["data"]["customer"] is None

        # Forgetting again, or someone unknown, answers null.
        assert (await gw.gql(FORGET, id=customer_id)) == {"data": {"forgetCustomer": None}}
        assert (await gw.gql(FORGET, id=str(uuid.uuid4()))) == {"data": {"forgetCustomer": None}}
    assert await count_rows(privacy_url, Customer) == customers - 1


async def test_sync_does_not_bring_a_forgotten_customer_back(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    person = person_for(samples, privacy_url)
    async with instance() as gw:
        found = await gw.gql("query($e: String!) { customer(email: $e) { id } }", e=person.email)
        customer_id = found["data"]["customer"]["id"]
        assert (await gw.gql(FORGET, id=customer_id))["data"]["forgetCustomer"]
        tombstones = services_of(gw.app).erasure.tombstones
        assert isinstance(tombstones, Tombstones)

    engine = create_engine(privacy_url)
    config = sample_upstreams_config(samples.base_urls, dict.fromkeys(samples.base_urls, FAST))
    adapters = build_adapters(config)
    try:
        reports = await sync(
            create_sessionmaker(engine), adapters, ["hubspot"], None, tombstones=tombstones
        )
    finally:
        await aclose_adapters(adapters)
        await engine.dispose()
    (report,) = reports
    assert report.status == "ok", report
    assert report.erased >= 1
    assert "erased" in report.line()
    async with instance() as gw:
        again = await gw.gql("query($e: String!) { customer(email: $e) { id } }", e=person.email)
    assert again == {"data": {"customer": None}}


async def test_forgetting_on_one_instance_drops_the_others_cached_copy(
    instance: Any, samples: SampleUpstreams, privacy_url: str, redis_url: str
) -> None:
    person = person_for(samples, privacy_url)
    async with instance(redis_url) as first, instance(redis_url) as second:
        cached = (await second.gql(BEHAVIOUR, email=person.email))["data"]["customer"]
        customer_id = cached["id"]
        # Read twice on the second instance: its copy is cached, locally and in Redis.
        assert (await second.gql(BEHAVIOUR, email=person.email))["data"]["customer"] == cached
        assert [k for k in await _redis_keys(redis_url) if customer_id in k]
        assert (await first.gql(FORGET, id=customer_id))["data"]["forgetCustomer"]
        by_email = await second.gql(BEHAVIOUR, email=person.email)
        by_id = await second.gql("query($id: ID!) { customer(id: $id) { id } }", id=customer_id)
    assert by_email == {"data": {"customer": None}}
    assert by_id == {"data": {"customer": None}}
    keys = await _redis_keys(redis_url)
    identifiers = (customer_id, person.email, person.hubspot_id, str(person.shopify_id))
    assert keys, keys
    assert not [k for k in keys if any(i in k for i in identifiers)], keys


async def _redis_keys(url: str) -> list[str]:
    client = aioredis.from_url(url)
    try:
        return [k.decode() async for k in client.scan_iter()]
    finally:
        await client.aclose()
