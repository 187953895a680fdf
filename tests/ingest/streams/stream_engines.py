"""The streaming engines the stream tests run on: the real Redis (the test server) and
the real NATS JetStream at 127.0.0.1:4222, each test on streams of its own, deleted
after. Under CI=true an unreachable engine fails the test instead of skipping it."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis

from gateway.ingest.streams.jetstream import JetStream
from gateway.ingest.streams.redis_streams import RedisStreams
from gateway.ingest.streams.transport import Transport
from tests.conftest import REDIS_BASE_URL, _unavailable

NATS_URL = os.environ.get("GATEWAY_TEST_NATS_URL", "nats://127.0.0.1:4222")
ENGINES = ("redis", "nats")

# Makes one more consumer of the test's group (a name of its own), opened.
Member = Callable[..., Any]


@asynccontextmanager
async def group(
    kind: str, claim_idle_s: float = 0.3, max_attempts: int = 5
) -> AsyncIterator[Member]:
    """A fresh stream and group on ``kind``; yields a factory of members of the group."""
    tag = uuid.uuid4().hex[:10]
    made: list[Any] = []

    async def member(name: str | None = None) -> Transport:
        transport: RedisStreams | JetStream
        if kind == "redis":
            client = aioredis.Redis.from_url(f"{REDIS_BASE_URL}/0")
            transport = RedisStreams(
                client,
                f"test-events-{tag}",
                "gateway",
                name or f"consumer-{len(made)}",
                f"test-events-{tag}:dead",
                claim_idle_s=claim_idle_s,
            )
        else:
            transport = JetStream(
                NATS_URL,
                stream=f"TEST_EVENTS_{tag}",
                subject=f"test.events.{tag}",
                durable="gateway",
                ack_wait_s=claim_idle_s,
                max_attempts=max_attempts,
            )
        try:
            await transport.open()
        except Exception as exc:  # noqa: BLE001 - unreachable engine: skip, or fail in CI
            _unavailable(kind, f"{type(exc).__name__}: {exc}")
        made.append(transport)
        return transport

    try:
        yield member
    finally:
        if made:  # by a member of its own: a test may have closed the others
            await (await member("cleaner")).delete()
        for transport in made:
            await transport.aclose()
