"""The consumer when a part fails under it, against the real engines and Postgres: a read
failing while a batch is stored, an acknowledgement failing after a commit, and the
database down while the consumer stops. The engine's own failures are injected by a
transport that wraps the real one and fails the calls a test names."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from uuid import UUID

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_engine
from gateway.ingest.streams.event_batches import CustomerTouch
from gateway.ingest.streams.transport import Delivery, Lag, Transport
from tests.ingest.streams.stream_database import engine, migrated
from tests.ingest.streams.stream_engines import ENGINES, group
from tests.ingest.streams.test_stream_consumer import (
    DEADLINE_S,
    consumer,
    customer_of,
    drain,
    duplicate_count,
    encode,
    identify,
    stored,
    track,
    user,
)

__all__ = ["engine", "migrated"]  # the fixtures (stream_database.py)

# Nothing listens on port 1: connecting is refused at once, like a database that is down.
UNREACHABLE = "postgresql+asyncpg://gateway@127.0.0.1:1/gateway"

pytestmark = pytest.mark.parametrize("kind", ENGINES)


class Faulty:
    """The real transport, whose ``failing_reads``-th reads (counted from 1) and first
    ``failing_acks`` acknowledgements fail as an engine's dropped connection does;
    ``log`` records the reads and acknowledgements in the order they happened."""

    def __init__(
        self, inner: Transport, failing_reads: frozenset[int] = frozenset(), failing_acks: int = 0
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.failing_reads = failing_reads
        self.failing_acks = failing_acks
        self.reads = 0
        self.log: list[str] = []

    async def open(self) -> None:
        await self.inner.open()

    async def read(self, count: int, wait_s: float) -> list[Delivery]:
        self.reads += 1
        if self.reads in self.failing_reads:
            self.log.append("read failed")
            raise ConnectionError("injected: the engine dropped the connection")
        self.log.append("read")
        return await self.inner.read(count, wait_s)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if self.failing_acks:
            self.failing_acks -= 1
            self.log.append("ack failed")
            raise ConnectionError("injected: the engine dropped the connection")
        await self.inner.ack(deliveries)
        self.log.append("ack")

    async def retry(self, delivery: Delivery, delay_s: float) -> None:
        await self.inner.retry(delivery, delay_s)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        await self.inner.dead_letter(delivery, reason)

    async def lag(self) -> Lag:
        return await self.inner.lag()

    async def publish(self, payloads: Sequence[bytes]) -> None:
        await self.inner.publish(payloads)

    async def dead_letters(self) -> int:
        return await self.inner.dead_letters()

    async def replay_dead_letters(self, count: int) -> int:
        return await self.inner.replay_dead_letters(count)

    async def delete(self) -> None:
        await self.inner.delete()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_read_failing_while_a_batch_is_stored_waits_for_that_batch(
    kind: str, engine: AsyncEngine
) -> None:
    async with group(kind, claim_idle_s=30.0) as member:
        transport = Faulty(await member(), failing_reads=frozenset({2}))
        messages = [track(user()) for _ in range(40)]
        ids = [m["messageId"] for m in messages]
        await transport.publish(encode(*messages))
        # The second read (the read-ahead, while the first batch is stored) fails.
        worker = consumer(transport, engine, batch_size=20, backoff_cap_s=0.01)
        running = asyncio.create_task(worker.run())
        await asyncio.wait_for(worker.wait_stored(len(ids)), DEADLINE_S)
        worker.stop()
        await asyncio.wait_for(running, DEADLINE_S)
        after_failure = transport.log[transport.log.index("read failed") + 1 :]
        # The first batch was committed and acknowledged before anything was read again:
        # never two batches in flight, no acknowledgement left running behind the loop.
        assert after_failure[0] == "ack"
        assert set((await stored(engine, ids)).values()) == {1}
        assert worker.status.stored == len(ids)
        assert await transport.dead_letters() == 0


async def test_a_failed_acknowledgement_still_invalidates_and_notifies(
    kind: str, engine: AsyncEngine
) -> None:
    async with group(kind) as member:
        transport = Faulty(await member())
        touched: list[set[UUID]] = []

        async def after_commit(customers: Mapping[UUID, CustomerTouch]) -> None:
            touched.append(set(customers))

        person = user()
        await transport.publish(encode(identify(person, f"{person}@example.com")))
        worker = consumer(transport, engine, after_commit=after_commit)
        await worker.step()
        customer = await customer_of(engine, person)
        touched.clear()
        transport.failing_acks = 1
        await transport.publish(encode(track(person)))
        with pytest.raises(ConnectionError):
            await worker.step()  # committed, then the acknowledgement failed
        # The commit changed the customer's recent events: its caches drop and its
        # subscribers hear it now, not never (the redelivery is a duplicate that
        # touches nobody).
        assert touched == [{customer}]
        duplicates = duplicate_count(kind)

        async def redelivered() -> bool:
            return duplicate_count(kind) > duplicates

        await drain(worker, until=redelivered)
        assert touched == [{customer}]
        assert transport.log[-1] == "ack"


async def test_stopping_while_the_database_is_down_leaves_the_batch_to_be_delivered_again(
    kind: str, engine: AsyncEngine
) -> None:
    async with group(kind) as member:
        transport = await member("down")
        messages = [track(user()) for _ in range(5)]
        ids = [m["messageId"] for m in messages]
        await transport.publish(encode(*messages))
        down = create_engine(UNREACHABLE, connect_timeout_s=0.5)
        try:
            # One delivery allowed: a failure counted against a message dead-letters it.
            stuck = consumer(transport, down, max_attempts=1, backoff_cap_s=0.05)
            storing = asyncio.create_task(stuck.step())
            deadline = time.monotonic() + DEADLINE_S
            while not stuck.status.database_waiting:
                assert time.monotonic() < deadline, "the consumer never tried the database"
                await asyncio.sleep(0.01)
            stuck.stop()
            assert await asyncio.wait_for(storing, DEADLINE_S) == len(ids)
        finally:
            await down.dispose()
        assert await transport.dead_letters() == 0  # the messages are fine
        await transport.aclose()  # it dies: another member gets the batch again
        healthy = consumer(await member("healthy"), engine)

        async def all_stored() -> bool:
            return len(await stored(engine, ids)) == len(ids)

        await drain(healthy, until=all_stored)
        assert set((await stored(engine, ids)).values()) == {1}
        assert await healthy.transport.dead_letters() == 0
