"""A stream batch stored on both databases the gateway supports: anonymous events and
the identify that names their device in one batch are stitched, the same batch
delivered again (a consumer died before acknowledging it) stores nothing twice, and an
erased person's events in a batch are dropped while the others are stored."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Event, Identity
from gateway.ingest.streams.event_batches import EventBatches
from gateway.privacy.erasure import Erasure
from gateway.privacy.tombstones import Tombstones


async def test_a_batch_is_stitched_and_its_redelivery_stores_nothing_twice(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    batches = EventBatches(engine, Tombstones(b"stream-batch-tests-key"))
    tag = uuid.uuid4().hex[:8]
    device = f"device-{tag}"
    messages: list[dict[str, Any]] = [
        {"type": "page", "name": "Home", "messageId": f"{tag}-{n}", "anonymousId": device}
        for n in range(3)
    ]
    messages.append(
        {
            "type": "identify",
            "messageId": f"{tag}-identify",
            "userId": f"user-{tag}",
            "anonymousId": device,
            "traits": {"email": f"{tag}@example.com"},
        }
    )
    try:
        first = await batches.store([batches.parse(orjson.dumps(m)) for m in messages])
        again = await batches.store([batches.parse(orjson.dumps(m)) for m in messages])
        async with engine.connect() as connection:
            owners = set(
                await connection.scalars(
                    select(Event.customer_id).where(Event.event_id.like(f"{tag}-%"))
                )
            )
            rows = await connection.scalar(
                select(func.count()).where(Event.event_id.like(f"{tag}-%"))
            )
    finally:
        await engine.dispose()
    assert first.outcomes == ["stored"] * 4
    assert first.stitched == 3
    assert again.outcomes == ["duplicate"] * 4
    assert rows == 4
    assert len(owners) == 1
    assert None not in owners


async def test_a_large_batch_delivered_again_stores_nothing_twice(database_url: str) -> None:
    # More events than one SQLite statement takes, and more than one user's events.
    engine = create_engine(database_url)
    batches = EventBatches(engine, Tombstones(b"stream-batch-tests-key"))
    tag = uuid.uuid4().hex[:8]
    messages = [
        {
            "type": "track" if n % 5 else "page",
            "event": "Product Viewed",
            "name": "Home",
            "messageId": f"{tag}-{n}",
            "userId": f"user-{tag}-{n % 40}",
            "anonymousId": f"device-{tag}-{n % 40}",
            "properties": {"product_id": f"sku-{n}"},
        }
        for n in range(1500)
    ]
    try:
        first = await batches.store([batches.parse(orjson.dumps(m)) for m in messages])
        again = await batches.store([batches.parse(orjson.dumps(m)) for m in messages])
        rows, owners = await _events(engine, tag)
    finally:
        await engine.dispose()
    assert first.outcomes == ["stored"] * 1500
    assert again.outcomes == ["duplicate"] * 1500
    assert not again.customers  # a redelivery touches nobody: no cache drop, no notice
    assert rows == 1500
    assert len(owners) == 40
    assert set(first.customers) == owners


async def test_an_erased_persons_events_in_a_batch_are_dropped_and_the_rest_kept(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    tombstones = Tombstones(b"stream-batch-tests-key")
    batches = EventBatches(engine, tombstones)
    tag = uuid.uuid4().hex[:8]
    erased, kept = f"erased-{tag}", f"kept-{tag}"

    def track(n: int, **who: Any) -> dict[str, Any]:
        return {"type": "track", "event": "Viewed", "messageId": f"{tag}-{n}", **who}

    hello = {
        "type": "identify",
        "messageId": f"{tag}-hello",
        "userId": erased,
        "anonymousId": f"device-{erased}",
        "traits": {"email": f"{erased}@example.com"},
    }
    try:
        await batches.store([batches.parse(orjson.dumps(hello))])
        async with engine.connect() as connection:
            customer = await connection.scalar(
                select(Identity.customer_id).where(Identity.external_id == erased)
            )
        assert customer is not None
        await Erasure(create_sessionmaker(engine), tombstones).forget(customer)
        batch = [
            track(1, userId=kept),
            track(2, userId=erased),
            track(3, anonymousId=f"device-{erased}"),  # the erased person's device
            track(4, properties={"email": f"{erased}@example.com"}),  # names them
            track(5, userId=kept, anonymousId=f"device-{kept}"),
        ]
        result = await batches.store([batches.parse(orjson.dumps(m)) for m in batch])
        rows, _ = await _events(engine, tag)
    finally:
        await engine.dispose()
    assert result.outcomes == ["stored", "erased", "erased", "erased", "stored"]
    assert rows == 2


async def _events(engine: AsyncEngine, tag: str) -> tuple[int, set[uuid.UUID | None]]:
    async with engine.connect() as connection:
        rows = await connection.scalar(select(func.count()).where(Event.event_id.like(f"{tag}-%")))
        owners = set(
            await connection.scalars(
                select(Event.customer_id).where(Event.event_id.like(f"{tag}-%")).distinct()
            )
        )
    return int(rows or 0), owners
