"""The consumer when the engine itself misbehaves, against real servers and Postgres: a
Redis of the test's own restarted without its data (the stream and the group gone).
Never the shared Redis: these servers are broken on purpose."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ingest.streams.redis_streams import RedisStreams
from tests.faults.redis_server import RedisServer
from tests.ingest.streams.stream_database import engine, migrated
from tests.ingest.streams.test_stream_consumer import (
    DEADLINE_S,
    consumer,
    encode,
    stored,
    track,
    user,
)

__all__ = ["engine", "migrated"]  # the fixtures (stream_database.py)


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
