"""A stream batch stored on both databases the gateway supports: anonymous events and
the identify that names their device in one batch are stitched, and the same batch
delivered again (a consumer died before acknowledging it) stores nothing twice."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import func, select

from gateway.db.engine import create_engine
from gateway.db.models import Event
from gateway.ingest.streams.event_batches import EventBatches
from gateway.privacy.erasure import Tombstones


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
