"""A TCP proxy on loopback that relays bytes until it is frozen; frozen, it keeps every
connection open and relays nothing, as a hung server or a network dropping packets
looks to a client (no error, no close: only silence). Thawed, it relays again.

    async with FreezingProxy.to(5432) as proxy:   # proxy.port: where clients connect
        proxy.freeze()
        proxy.thaw()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class FreezingProxy:
    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def to(cls, target_port: int) -> AsyncIterator[FreezingProxy]:
        proxy = cls(target_port)
        server = await asyncio.start_server(proxy._accepted, "127.0.0.1", 0)
        proxy.port = server.sockets[0].getsockname()[1]
        try:
            yield proxy
        finally:
            server.close()
            for task in proxy._tasks:
                task.cancel()
            await asyncio.gather(*proxy._tasks, return_exceptions=True)

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._flowing.wait()  # frozen: a new connection is accepted, never answered
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self._target_port
        )
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._relay(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _relay(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sink.close()
