"""The consumer when the engine itself misbehaves, against real servers and Postgres: a
Redis of the test's own restarted without its data (the stream and the group gone) or
its stream deleted under a waiting read; the same Redis full (``maxmemory`` with
``noeviction``: the dead letter's XADD refused while reads and acknowledgements still
work, for an invalid message or for one that fails alone in the database); a
JetStream whose dead letter cannot be written (its stream gone), and one that lost its
stream and durable. Never the shared Redis: these servers are broken on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from nats.js.api import RetentionPolicy, StreamConfig
from nats.js.errors import NoStreamResponseError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ingest.streams import jetstream
from gateway.ingest.streams.jetstream import JetStream
from gateway.ingest.streams.redis_streams import RedisStreams
from tests.faults.redis_server import RedisServer
from tests.ingest.streams.stream_database import engine, migrated
from tests.ingest.streams.stream_engines import group
from tests.ingest.streams.test_stream_consumer import (
    DEADLINE_S,
    consumer,
    drain,
    encode,
    stored,
    track,
    user,
)

__all__ = ["engine", "migrated"]  # the fixtures (stream_database.py)

NOT_JSON = b"{not json"


def redis_transport(url: str, *, claim_idle_s: float = 30.0) -> RedisStreams:
    stream = f"test-events-{uuid.uuid4().hex[:10]}"
    return RedisStreams.from_url(url, stream, "gateway", "only", claim_idle_s=claim_idle_s)


async def test_the_consumer_goes_on_after_redis_restarts_without_its_data(
    engine: AsyncEngine,
) -> None:
    with RedisServer() as server:  # no persistence: a cache Redis, the default
        transport = redis_transport(server.url)
        producer = aioredis.Redis.from_url(server.url)
        worker = consumer(transport, engine, backoff_cap_s=0.05)
        running = asyncio.create_task(worker.run())
        try:
            before = [track(user()) for _ in range(3)]
            await transport.publish(encode(*before))
            await asyncio.wait_for(worker.wait_stored(len(before)), DEADLINE_S)
            server.restart()
            # A producer's XADD makes the stream again, without the consumers' group:
            # every XREADGROUP then answers NOGROUP.
            after = [track(user()) for _ in range(3)]
            for message in after:
                await producer.xadd(transport.stream, {b"payload": orjson.dumps(message)})
            await asyncio.wait_for(worker.wait_stored(len(before) + len(after)), DEADLINE_S)
        finally:
            worker.stop()
            await asyncio.wait_for(running, DEADLINE_S)
            await producer.aclose()
            await transport.aclose()
        ids = [m["messageId"] for m in (*before, *after)]
        assert await stored(engine, ids) == dict.fromkeys(ids, 1)


async def test_a_stream_deleted_under_a_waiting_read_is_made_again_at_once(
    engine: AsyncEngine,
) -> None:
    with RedisServer() as server:
        transport = redis_transport(server.url)
        admin = aioredis.Redis.from_url(server.url)
        # A pause after a failed read longer than the test waits: only a read that
        # makes the group again at once stores what comes next.
        worker = consumer(transport, engine, wait_s=5.0, backoff_cap_s=DEADLINE_S * 2)
        running = asyncio.create_task(worker.run())
        try:
            before = track(user())
            await transport.publish(encode(before))
            await asyncio.wait_for(worker.wait_stored(1), DEADLINE_S)
            await asyncio.sleep(0.2)  # the consumer waits in XREADGROUP BLOCK
            # FLUSHALL, or an eviction policy on a cache Redis: the key goes, the read
            # waiting on it answers UNBLOCKED.
            await admin.delete(transport.stream)
            after = track(user())
            await admin.xadd(transport.stream, {b"payload": orjson.dumps(after)})
            await asyncio.wait_for(worker.wait_stored(2), DEADLINE_S)
        finally:
            worker.stop()
            running.cancel()  # a pause of the old code would outlast the test
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await admin.aclose()
            await transport.aclose()
        ids = [before["messageId"], after["messageId"]]
        assert await stored(engine, ids) == dict.fromkeys(ids, 1)


async def test_a_full_redis_stores_the_valid_messages_and_dead_letters_the_invalid_later(
    engine: AsyncEngine,
) -> None:
    with RedisServer() as server:
        transport = redis_transport(server.url, claim_idle_s=0.3)
        admin = aioredis.Redis.from_url(server.url)
        try:
            await transport.open()
            good = [track(user()) for _ in range(4)]
            await transport.publish([*encode(*good[:2]), NOT_JSON, *encode(*good[2:])])
            # Over its limit at once: every command that allocates (XADD) is refused,
            # XREADGROUP, XAUTOCLAIM and XACK still answer.
            await admin.config_set("maxmemory-policy", "noeviction")
            await admin.config_set("maxmemory", 1)
            worker = consumer(transport, engine, max_attempts=2)
            assert await worker.step() == len(good) + 1
            ids = [m["messageId"] for m in good]
            assert await stored(engine, ids) == dict.fromkeys(ids, 1)
            # The invalid one could not be dead-lettered: pending, not acknowledged.
            assert await transport.dead_letters() == 0
            assert (await admin.xpending(transport.stream, "gateway"))["pending"] == 1
            # Claimed again while Redis stays full, past its attempts: still kept.
            for _ in range(3):
                await asyncio.sleep(0.35)  # past the claim idle time
                await worker.step()
            assert (await admin.xpending(transport.stream, "gateway"))["pending"] == 1
            await admin.config_set("maxmemory", 0)

            async def dead_lettered() -> bool:
                return await transport.dead_letters() == 1

            await drain(worker, until=dead_lettered)
            dead: Any = await admin.xrange(transport.dead_letter_stream)
            [(_, fields)] = dead
            # Its own reason, not "delivered N times without being stored".
            assert fields[b"reason"] == b"invalid: the message is not valid JSON"
            assert fields[b"payload"] == NOT_JSON
            assert (await admin.xpending(transport.stream, "gateway"))["pending"] == 0
            assert worker.status.stored == len(good)
        finally:
            await admin.aclose()
            await transport.aclose()


async def test_a_failing_dead_letter_publish_costs_the_valid_nats_messages_nothing(
    engine: AsyncEngine,
) -> None:
    async with group("nats", claim_idle_s=0.5) as member:
        transport = await member("only")
        assert isinstance(transport, JetStream)
        good = [track(user()) for _ in range(4)]
        await transport.publish([*encode(*good[:2]), NOT_JSON, *encode(*good[2:])])
        # No stream behind the dead letter's subject: its publish has no responder.
        await transport.js.delete_stream(transport.dead_stream)
        worker = consumer(transport, engine)
        read = 0
        while read < len(good) + 1:
            read += await worker.step()
        ids = [m["messageId"] for m in good]
        assert await stored(engine, ids) == dict.fromkeys(ids, 1)
        await transport.js.add_stream(
            StreamConfig(
                name=transport.dead_stream,
                subjects=[transport.dead_subject],
                retention=RetentionPolicy.WORK_QUEUE,
            )
        )

        async def dead_lettered() -> bool:
            return await transport.dead_letters() == 1

        # Not acknowledged: redelivered after the ack wait, dead-lettered this time.
        await drain(worker, until=dead_lettered)
        dead = await transport.js.get_msg(transport.dead_stream, 1)
        assert dead.data == NOT_JSON
        assert (dead.headers or {})["Gateway-Reason"] == "invalid: the message is not valid JSON"
        assert worker.status.stored == len(good)


async def test_a_full_redis_stores_the_rest_of_a_batch_split_around_an_event_that_fails(
    engine: AsyncEngine,
) -> None:
    with RedisServer() as server:
        transport = redis_transport(server.url)
        admin = aioredis.Redis.from_url(server.url)
        try:
            await transport.open()
            good = [track(user()) for _ in range(7)]
            # Valid to the schema, refused by Postgres (a NUL in a text column): the
            # batch is stored in halves, and this one fails alone, its attempts spent.
            refused = track(user(), messageId="m-\u0000-nul")
            await transport.publish(encode(*good[:3], refused, *good[3:]))
            await admin.config_set("maxmemory-policy", "noeviction")
            await admin.config_set("maxmemory", 1)
            worker = consumer(transport, engine, max_attempts=1)
            assert await worker.step() == len(good) + 1
            # The halves after it were stored though its dead letter was refused.
            ids = [m["messageId"] for m in good]
            assert await stored(engine, ids) == dict.fromkeys(ids, 1)
            assert (await admin.xpending(transport.stream, "gateway"))["pending"] == 1
            assert await transport.dead_letters() == 0
        finally:
            await admin.aclose()
            await transport.aclose()


async def test_a_nats_consumer_makes_its_lost_stream_and_durable_again(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jetstream, "CHECK_S", 0.1)
    async with group("nats", claim_idle_s=30.0) as member:
        transport = await member("only")
        assert isinstance(transport, JetStream)
        worker = consumer(transport, engine, backoff_cap_s=0.05)
        running = asyncio.create_task(worker.run())
        try:
            before = track(user())
            await transport.publish(encode(before))
            await asyncio.wait_for(worker.wait_stored(1), DEADLINE_S)
            # As a server restarted without its storage: the stream and the durable gone.
            await transport.js.delete_stream(transport.stream)
            after = track(user())
            deadline = time.monotonic() + DEADLINE_S
            while True:  # a producer's publish has no stream until the consumer makes it
                try:
                    await transport.publish(encode(after))
                    break
                except NoStreamResponseError:
                    assert time.monotonic() < deadline, "the stream was never made again"
                    await asyncio.sleep(0.1)
            await asyncio.wait_for(worker.wait_stored(2), DEADLINE_S)
        finally:
            worker.stop()
            await asyncio.wait_for(running, DEADLINE_S)
        ids = [before["messageId"], after["messageId"]]
        assert await stored(engine, ids) == dict.fromkeys(ids, 1)
