"""A consumer inside ``gateway serve`` (GATEWAY_STREAM_CONSUME_IN_SERVE): events from the
Redis stream are stored, the customer's subscribers hear one change per batch however
many of its events the batch held, and /readyz and /metrics report the consumer."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import orjson
import pytest
from sqlalchemy import select

from gateway.db.migrate import upgrade
from gateway.db.models import Identity
from gateway.ingest.streams.redis_streams import RedisStreams
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.conftest import clean_redis, redis_database_url
from tests.in_process import asgi, lifespan, state_of

DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def migrated(postgres_url: str) -> str:
    upgrade(postgres_url)
    return postgres_url


async def test_a_consumer_in_serve_stores_notifies_once_per_customer_and_reports(
    migrated: str,
) -> None:
    async with clean_redis(redis_database_url(9)) as redis_url:
        stream = f"serve-events-{uuid.uuid4().hex[:8]}"
        settings = load_settings(
            database_url=migrated,
            cache_url=redis_url,
            stream_consume_in_serve=True,
            stream_name=stream,
            stream_wait_s=0.1,
        )
        producer = RedisStreams.from_url(redis_url, stream, "producer", "p")
        app = create_app(settings)
        async with lifespan(app):
            state = state_of(app)
            consumer = state["consumer"]
            assert consumer is not None
            user = f"u{uuid.uuid4().hex[:10]}"
            hello = {
                "type": "identify",
                "messageId": f"m-{uuid.uuid4()}",
                "userId": user,
                "traits": {"email": f"{user}@example.com"},
            }
            await producer.publish([orjson.dumps(hello)])
            async with asyncio.timeout(DEADLINE_S):
                await consumer.wait_stored(1)
            async with state["services"].engine.connect() as connection:
                customer_id = await connection.scalar(
                    select(Identity.customer_id).where(Identity.external_id == user)
                )
            assert customer_id is not None
            views = [
                {
                    "type": "track",
                    "event": "Product Viewed",
                    "messageId": f"m-{uuid.uuid4()}",
                    "userId": user,
                    "properties": {"product_id": f"sku-{n}"},
                }
                for n in range(5)
            ]
            notifications = state["services"].notifications
            async with notifications.subscribe(customer_id) as changes:
                before = consumer.status.batches
                await producer.publish([orjson.dumps(v) for v in views])
                async with asyncio.timeout(DEADLINE_S):
                    change = await anext(changes)
                    while change.event_type == "identify":  # the first batch's, late
                        change = await anext(changes)
                    await consumer.wait_stored(6)
                assert change.customer_id == customer_id
                assert "recent_events" in change.fields
                if consumer.status.batches == before + 1:  # the five in one batch
                    with pytest.raises(TimeoutError):
                        async with asyncio.timeout(0.3):
                            await anext(changes)
            async with httpx.AsyncClient(transport=asgi(app), base_url="http://gw") as http:
                ready = (await http.get("/readyz")).json()
                metrics = (await http.get("/metrics")).text
            assert ready["consumer"]["running"] is True
            assert ready["consumer"]["stored"] == 6
            assert 'gateway_stream_events_total{outcome="stored",transport="redis"}' in metrics
        await producer.delete()
        await producer.aclose()
