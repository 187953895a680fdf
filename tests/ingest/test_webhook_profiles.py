"""Webhooks from each source write the profile and drop the cached answers they change."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select

from demo.upstreams.runner import SampleUpstreams
from gateway.db.engine import create_engine
from gateway.db.models import Attribute
from gateway.settings import load_settings
from tests.conftest import FAST, api_client, unique_email
from tests.gql_client import gql
from tests.in_process import lifespan
from tests.ingest.webhook_requests import (
    BASE,
    PROFILE,
    external_id,
    hubspot_change,
    hubspot_request,
    realtime_app,
    segment_request,
    shopify_request,
)


async def test_shopify_customer_webhooks_update_the_profile_and_the_cache(
    gateway: httpx.AsyncClient,
) -> None:
    email, shop_id = unique_email("shop"), external_id()
    created = await gateway.post(
        **shopify_request(
            {"id": shop_id, "email": email, "first_name": "Ada", "last_name": "Lovelace"},
            topic="customers/create",
        )
    )
    assert created.status_code == 200, created.text
    assert created.json()["status"] == "processed"
    first = (await gql(gateway, PROFILE, email=email))["data"]["customer"]  # now cached
    assert first["firstName"] == "Ada"
    assert first["id"] == created.json()["events"][0]["customerId"]

    updated = await gateway.post(
        **shopify_request({"id": shop_id, "email": email, "first_name": "Augusta"})
    )
    assert updated.json()["status"] == "processed"
    after = (await gql(gateway, PROFILE, email=email))["data"]["customer"]
    assert after == {"id": first["id"], "firstName": "Augusta", "lastName": "Lovelace"}


async def test_a_shopify_order_links_its_customer(gateway: httpx.AsyncClient) -> None:
    email = unique_email("order")
    order = {
        "id": external_id(),
        "email": email,
        "created_at": "2026-11-23T10:00:00+00:00",
        "total_price": "19.99",
        "currency": "EUR",
        "customer": {"id": external_id(), "email": email, "first_name": "Grace"},
    }
    response = await gateway.post(**shopify_request(order, topic="orders/create"))
    assert response.status_code == 200, response.text
    customer = (await gql(gateway, PROFILE, email=email))["data"]["customer"]
    assert customer["firstName"] == "Grace"
    assert customer["id"] == response.json()["events"][0]["customerId"]


async def test_hubspot_property_changes_update_the_profile_without_an_upstream_call(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    email, contact = unique_email("hub"), external_id()
    response = await gateway.post(**hubspot_request([hubspot_change(contact, "email", email)]))
    assert response.status_code == 200, response.text
    before = (await gql(gateway, PROFILE, email=email))["data"]["customer"]
    assert before["firstName"] is None

    batch = [
        hubspot_change(contact, "firstname", "Katherine"),
        hubspot_change(contact, "lifecyclestage", "customer"),
    ]
    response = await gateway.post(**hubspot_request(batch))
    assert response.json()["status"] == "processed"
    assert [e["customerId"] for e in response.json()["events"]] == [before["id"]] * 2
    after = (await gql(gateway, PROFILE, email=email))["data"]["customer"]
    assert after["firstName"] == "Katherine"
    engine = create_engine(database_url)
    async with engine.connect() as connection:
        stage = await connection.scalar(
            select(Attribute.value).where(
                Attribute.customer_id == uuid.UUID(before["id"]),
                Attribute.name == "lifecycle_stage",
            )
        )
    await engine.dispose()
    assert stage == "customer"


async def test_segment_identify_and_track_update_the_profile(gateway: httpx.AsyncClient) -> None:
    email, user_id = unique_email("seg"), f"user-{uuid.uuid4().hex[:8]}"
    identify = {
        "type": "identify",
        "messageId": str(uuid.uuid4()),
        "userId": user_id,
        "traits": {"email": email, "firstName": "Mary"},
        "timestamp": "2026-11-23T10:00:00Z",
    }
    assert (await gateway.post(**segment_request(identify))).status_code == 200
    assert (await gql(gateway, PROFILE, email=email))["data"]["customer"]["firstName"] == "Mary"
    renamed = dict(identify, messageId=str(uuid.uuid4()), traits={"firstName": "Maryam"})
    renamed["timestamp"] = "2026-11-23T11:00:00Z"
    assert (await gateway.post(**segment_request(renamed))).json()["status"] == "processed"
    assert (await gql(gateway, PROFILE, email=email))["data"]["customer"]["firstName"] == "Maryam"

    track = {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "userId": user_id,
        "event": "Product Viewed",
        "properties": {"sku": "A-1"},
    }
    response = await gateway.post(**segment_request(track))
    assert response.json()["status"] == "processed"


async def test_a_crm_webhook_drops_the_cached_crm_answer_on_every_field(
    samples: SampleUpstreams, seeded_url: str
) -> None:
    """The upstream cache, not only the stored profile: the next read asks HubSpot again."""
    from demo.wiring import sample_upstreams_config

    samples.reset()
    config = sample_upstreams_config(samples.base_urls, dict.fromkeys(samples.base_urls, FAST))
    settings = load_settings(database_url=seeded_url, cache_url="memory://")
    app = realtime_app(settings, upstreams=config)
    person = samples.people[90]
    query = "query($email: String!) { customer(email: $email) { id lifecycleStage } }"
    async with lifespan(app), api_client(app, base_url=BASE) as c:
        customer = (await gql(c, query, email=person.email))["data"]["customer"]
        await gql(c, query, email=person.email)
        warm = samples.hubspot.calls.total  # the second read was served from the cache
        change = hubspot_change(int(person.hubspot_id), "lifecyclestage", "customer")
        response = await c.post(**hubspot_request([change]))
        assert response.json()["events"][0]["customerId"] == customer["id"]
        await gql(c, query, email=person.email)
    assert samples.hubspot.calls.total == warm + 1
    samples.reset()
