"""The stream consumer against the real engines (Redis Streams and NATS JetStream) and
a real Postgres: two consumers sharing a group with one dying mid-batch, poison
messages dead-lettered and replayed, duplicates, erased and refusing customers, and
anonymous activity stitched to the customer an identify names."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_sessionmaker
from gateway.db.models import Event, Identity
from gateway.ingest.streams.consumer import StreamConsumer, replay_dead_letters
from gateway.ingest.streams.event_batches import EventBatches
from gateway.ingest.streams.transport import Transport
from gateway.privacy.consent import ConsentStore, Purpose
from gateway.privacy.erasure import Erasure
from gateway.privacy.tombstones import Tombstones
from tests.ingest.streams.stream_database import engine, migrated
from tests.ingest.streams.stream_engines import ENGINES, group

__all__ = ["engine", "migrated"]  # the fixtures (stream_database.py)

TOMBSTONES = Tombstones(b"stream-tests-erasure-key")
DEADLINE_S = 20.0

pytestmark = pytest.mark.parametrize("kind", ENGINES)


def consumer(transport: Transport, engine: AsyncEngine, **kw: Any) -> StreamConsumer:
    kw.setdefault("batch_size", 50)
    kw.setdefault("wait_s", 0.2)
    return StreamConsumer(transport, EventBatches(engine, TOMBSTONES), **kw)


def track(user: str | None, anonymous: str | None = None, **kw: Any) -> dict[str, Any]:
    message = {
        "type": "track",
        "event": "Product Viewed",
        "messageId": f"m-{uuid.uuid4()}",
        "timestamp": "2026-12-01T10:00:00Z",
        "properties": {"product_id": "sku-1"},
    }
    if user:
        message["userId"] = user
    if anonymous:
        message["anonymousId"] = anonymous
    return {**message, **kw}


def identify(user: str, email: str, anonymous: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "identify",
        "messageId": f"m-{uuid.uuid4()}",
        "userId": user,
        "traits": {"email": email, "firstName": "Ada"},
        "timestamp": "2026-12-01T09:00:00Z",
    }
    if anonymous:
        message["anonymousId"] = anonymous
    return message


def encode(*messages: dict[str, Any]) -> list[bytes]:
    return [orjson.dumps(m) for m in messages]


def user() -> str:
    return f"u{uuid.uuid4().hex[:12]}"


async def stored(engine: AsyncEngine, message_ids: list[str]) -> dict[str, int]:
    """How many rows each messageId has."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(Event.event_id, func.count())
            .where(Event.source == "segment", Event.event_id.in_(message_ids))
            .group_by(Event.event_id)
        )
        return dict(rows.all())


async def owners(engine: AsyncEngine, message_ids: list[str]) -> dict[str, uuid.UUID | None]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(Event.event_id, Event.customer_id).where(Event.event_id.in_(message_ids))
        )
        return dict(rows.all())


async def customer_of(engine: AsyncEngine, user_id: str) -> uuid.UUID:
    async with engine.connect() as connection:
        found = await connection.scalar(
            select(Identity.customer_id).where(
                Identity.source == "segment", Identity.external_id == user_id
            )
        )
    assert found is not None
    return found


async def drain(*consumers: StreamConsumer, until: Any) -> None:
    """Step the consumers in turn until ``until()`` holds (the engines redeliver on
    their own clocks: the claim idle time, the ack wait)."""
    deadline = time.monotonic() + DEADLINE_S
    while not await until():
        assert time.monotonic() < deadline, "the consumers did not catch up"
        for each in consumers:
            await each.step()


async def test_two_consumers_one_killed_mid_batch_lose_nothing_and_store_nothing_twice(
    kind: str, engine: AsyncEngine
) -> None:
    async with group(kind) as member:
        first, second = await member("first"), await member("second")
        messages = [track(user()) for _ in range(120)]
        ids = [m["messageId"] for m in messages]
        await first.publish(encode(*messages))
        # The first consumer takes a batch and dies before its transaction commits...
        lost = await first.read(40, 1.0)
        assert len(lost) == 40
        # ... and takes another, commits it, and dies before acknowledging it.
        committed = await first.read(40, 1.0)
        batches = EventBatches(engine, TOMBSTONES)
        await batches.store([batches.parse(d.payload) for d in committed])
        await first.aclose()
        survivor = consumer(second, engine)

        async def all_stored() -> bool:
            return len(await stored(engine, ids)) == len(ids)

        await drain(survivor, until=all_stored)
        counts = await stored(engine, ids)
        assert set(counts) == set(ids)
        assert set(counts.values()) == {1}
        assert survivor.status.stored == 80  # the 40 committed before were duplicates


async def test_a_poison_message_is_dead_lettered_with_its_reason_and_replayed(
    kind: str, engine: AsyncEngine
) -> None:
    async with group(kind, max_attempts=2) as member:
        transport = await member("only")
        good = track(user())
        missing_id = {k: v for k, v in track(user()).items() if k != "messageId"}
        await transport.publish([b"{not json", orjson.dumps(missing_id), *encode(good)])
        worker = consumer(transport, engine, max_attempts=2)

        async def dead_lettered() -> bool:
            return bool(await transport.dead_letters() == 2)

        await drain(worker, until=dead_lettered)
        assert await stored(engine, [good["messageId"]]) == {good["messageId"]: 1}
        # A valid message its consumers died on every time: dead-lettered once its
        # deliveries run out, then replayed by an operator and stored.
        crashing = track(user())
        await transport.publish(encode(crashing))
        for _ in range(3):
            dying = await member()
            await drain_reads(dying, 1)
            await dying.aclose()

        async def three() -> bool:
            return bool(await transport.dead_letters() == 3)

        await drain(worker, until=three)
        assert await stored(engine, [crashing["messageId"]]) == {}
        progress: list[tuple[int, int]] = []
        moved = await replay_dead_letters(transport, lambda m, t: progress.append((m, t)))
        assert moved == 3
        assert progress[-1] == (3, 3)

        async def replayed() -> bool:
            return crashing["messageId"] in await stored(engine, [crashing["messageId"]])

        await drain(worker, until=replayed)
        # The invalid two are dead-lettered again, with their reasons: nothing is lost.
        await drain(worker, until=dead_lettered)


async def drain_reads(transport: Transport, count: int) -> None:
    """Read until ``count`` messages came (redeliveries take the engine's idle time)."""
    deadline = time.monotonic() + DEADLINE_S
    got = 0
    while got < count:
        assert time.monotonic() < deadline, "nothing was redelivered"
        got += len(await transport.read(count, 0.2))


async def test_a_duplicate_message_id_is_stored_once(kind: str, engine: AsyncEngine) -> None:
    async with group(kind) as member:
        transport = await member()
        message = track(user())
        # Twice in one batch and once more in a later one.
        await transport.publish(encode(message, message))
        worker = consumer(transport, engine)
        await worker.step()
        await transport.publish(encode({**message, "properties": {"changed": True}}))
        replayed = [track(user())]
        await transport.publish(encode(*replayed))

        async def both() -> bool:
            return len(await stored(engine, [replayed[0]["messageId"]])) == 1

        await drain(worker, until=both)
        assert await stored(engine, [message["messageId"]]) == {message["messageId"]: 1}
        assert await transport.dead_letters() == 0


async def test_an_erased_customers_events_are_not_stored(kind: str, engine: AsyncEngine) -> None:
    async with group(kind) as member:
        transport = await member()
        person, device = user(), f"anon-{uuid.uuid4().hex[:8]}"
        hello = identify(person, f"{person}@example.com", anonymous=device)
        await transport.publish(encode(hello))
        worker = consumer(transport, engine)

        async def known() -> bool:
            return len(await stored(engine, [hello["messageId"]])) == 1

        await drain(worker, until=known)
        customer = await customer_of(engine, person)
        await Erasure(create_sessionmaker(engine), TOMBSTONES).forget(customer)
        after = [track(person), track(None, anonymous=device), identify(person, "x@example.com")]
        last = track(user())
        await transport.publish(encode(*after, last))

        async def through() -> bool:
            return len(await stored(engine, [last["messageId"]])) == 1

        await drain(worker, until=through)
        assert await stored(engine, [m["messageId"] for m in after]) == {}
        assert await transport.dead_letters() == 0  # acknowledged, not poison


async def test_a_refusal_of_analytics_keeps_the_customers_events_out(
    kind: str, engine: AsyncEngine
) -> None:
    async with group(kind) as member:
        transport = await member()
        person = user()
        hello = identify(person, f"{person}@example.com")
        await transport.publish(encode(hello))
        worker = consumer(transport, engine)

        async def known() -> bool:
            return len(await stored(engine, [hello["messageId"]])) == 1

        await drain(worker, until=known)
        customer = await customer_of(engine, person)
        sessions = create_sessionmaker(engine)
        await ConsentStore(sessions).record(customer, Purpose.ANALYTICS, False, "preferences")
        refused, other = track(person), track(user())
        await transport.publish(encode(refused, other))

        async def through() -> bool:
            return len(await stored(engine, [other["messageId"]])) == 1

        await drain(worker, until=through)
        assert await stored(engine, [refused["messageId"]]) == {}


async def test_anonymous_events_are_stitched_to_the_customer_an_identify_names(
    kind: str, engine: AsyncEngine
) -> None:
    async with group(kind) as member:
        transport = await member()
        person, device = user(), f"anon-{uuid.uuid4().hex[:8]}"
        before = [track(None, anonymous=device) for _ in range(3)]
        await transport.publish(encode(*before))
        worker = consumer(transport, engine)
        ids = [m["messageId"] for m in before]

        async def kept() -> bool:
            return len(await stored(engine, ids)) == 3

        await drain(worker, until=kept)
        assert set((await owners(engine, ids)).values()) == {None}
        hello = identify(person, f"{person}@example.com", anonymous=device)
        await transport.publish(encode(hello))

        async def linked() -> bool:
            return len(await stored(engine, [hello["messageId"]])) == 1

        await drain(worker, until=linked)
        customer = await customer_of(engine, person)
        assert set((await owners(engine, ids)).values()) == {customer}
        later = track(None, anonymous=device)
        await transport.publish(encode(later))

        async def landed() -> bool:
            return len(await stored(engine, [later["messageId"]])) == 1

        await drain(worker, until=landed)
        assert (await owners(engine, [later["messageId"]]))[later["messageId"]] == customer


async def test_the_run_loop_reading_ahead_stores_every_message_once_and_stops_clean(
    kind: str, engine: AsyncEngine
) -> None:
    # A long claim idle time / ack wait: nothing is redelivered behind the loop's back.
    async with group(kind, claim_idle_s=30.0) as member:
        transport = await member()
        messages = [track(user()) for _ in range(100)]
        ids = [m["messageId"] for m in messages]
        await transport.publish(encode(*messages))
        worker = consumer(transport, engine, batch_size=20)
        duplicates = duplicate_count(kind)
        running = asyncio.create_task(worker.run())
        await asyncio.wait_for(worker.wait_stored(len(ids)), DEADLINE_S)
        worker.stop()
        await asyncio.wait_for(running, DEADLINE_S)
        assert set((await stored(engine, ids)).values()) == {1}
        assert worker.status.stored == len(ids)
        assert duplicate_count(kind) == duplicates  # nothing was read twice
        assert await transport.dead_letters() == 0


async def test_a_restarted_redis_consumer_reads_its_backlog_once_while_reading_ahead(
    kind: str, engine: AsyncEngine
) -> None:
    if kind != "redis":
        pytest.skip("a Redis consumer's own pending entries (JetStream redelivers by itself)")
    async with group(kind, claim_idle_s=30.0) as member:
        first = await member("restarted")
        await first.publish(encode(*(track(user()) for _ in range(40))))
        held = await first.read(30, 1.0)  # then it dies before storing them
        await first.aclose()
        again = await member("restarted")
        # Three reads before any acknowledgement (a batch in flight, the next read ahead).
        reads = [await again.read(10, 0.2) for _ in range(4)]
        backlog = [d.handle for got in reads[:3] for d in got]
        assert backlog == [d.handle for d in held]  # each once, in order
        assert len(reads[3]) == 10
        assert not {d.handle for d in reads[3]} & set(backlog)


def duplicate_count(kind: str) -> float:
    labels = {"transport": kind, "outcome": "duplicate"}
    return REGISTRY.get_sample_value("gateway_stream_events_total", labels) or 0.0
