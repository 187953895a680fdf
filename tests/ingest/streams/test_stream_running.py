"""The parts ``gateway consume`` and ``gateway retention run`` open: their engine gives up
on a database that does not answer as the gateway's own does, after the configured
timeouts rather than the library's (minutes to connect, 30 s for a pooled connection)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.config import UpstreamsConfig
from gateway.errors import DatabaseUnavailable
from gateway.ingest.streams.running import ConsumerParts
from gateway.settings import load_settings

# Far above the configured connect timeout, below the engine's default (2 s): only a
# connect that honours the setting gives up inside it.
BOUND_S = 1.5


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A loopback server that accepts connections and never says a word (a database
    host that hangs), closed after the test."""
    held: list[asyncio.StreamWriter] = []

    async def hang(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_the_consumers_engine_gives_up_after_the_configured_timeouts(
    silent_port: int,
) -> None:
    settings = load_settings(
        database_url=f"postgresql+asyncpg://gateway@127.0.0.1:{silent_port}/gateway",
        cache_url="memory://",
        database_connect_timeout_s=0.2,
        database_pool_timeout_s=0.6,
    )
    parts = ConsumerParts.open(settings, UpstreamsConfig())
    try:
        assert parts.engine.pool.timeout() == 0.6  # type: ignore[attr-defined]
        with pytest.raises(DatabaseUnavailable):
            async with asyncio.timeout(BOUND_S), parts.engine.connect():
                pass
    finally:
        await parts.aclose()
