"""A TCP proxy on loopback in front of Postgres that loses one COMMIT's reply: the
commit goes through, the client never hears so.

    async with LostReply.started(host, port) as proxy:
        url = ...127.0.0.1:{proxy.port}...   # connections through it are passed on as they are
        proxy.lose_next_commit_after_copy()
        ...                                   # the next COMMIT of a transaction that COPYed:
                                              # forwarded, its reply read from the server
                                              # and dropped, both sockets closed

Only what the client sends is read as the wire protocol (startup, then typed
messages); the server's bytes are passed on untouched until the reply to cut. An
SSLRequest is refused here ('N'), so the stream stays plain text whatever the server
offers.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

_REFUSED_HERE = {80877103, 80877104}  # SSLRequest, GSSENCRequest
_COPY_MESSAGES = {b"d", b"c"}  # CopyData, CopyDone


class LostReply:
    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._armed = False
        self.cuts = 0  # replies lost so far
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @classmethod
    @asynccontextmanager
    async def started(cls, host: str, port: int) -> AsyncIterator[LostReply]:
        proxy = cls(host, port)
        proxy._server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
        try:
            yield proxy
        finally:
            proxy._server.close()
            for writer in list(proxy._writers):
                writer.close()
            await proxy._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def lose_next_commit_after_copy(self) -> None:
        self._armed = True

    async def _serve(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        server, to_server = await asyncio.open_connection(*self._target)
        self._writers |= {to_client, to_server}
        cutting = asyncio.Event()
        pumps = [
            asyncio.create_task(self._upstream(client, to_client, to_server, cutting)),
            asyncio.create_task(self._downstream(server, to_client, cutting)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for writer in (to_client, to_server):
                writer.close()
                self._writers.discard(writer)
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _upstream(
        self,
        client: asyncio.StreamReader,
        to_client: asyncio.StreamWriter,
        to_server: asyncio.StreamWriter,
        cutting: asyncio.Event,
    ) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:  # the startup packet: a length, then a code and its body
                length = struct.unpack("!i", await client.readexactly(4))[0]
                body = await client.readexactly(length - 4)
                if struct.unpack("!i", body[:4])[0] in _REFUSED_HERE:
                    to_client.write(b"N")
                    await to_client.drain()
                    continue
                to_server.write(struct.pack("!i", length) + body)
                break
            copied = False
            while True:  # typed messages: a byte, a length (itself included), a body
                head = await client.readexactly(5)
                body = await client.readexactly(struct.unpack("!i", head[1:])[0] - 4)
                kind = head[:1]
                copied = copied or kind in _COPY_MESSAGES
                ends = kind == b"Q" and body.upper().startswith((b"COMMIT", b"ROLLBACK"))
                if self._armed and copied and ends and body.upper().startswith(b"COMMIT"):
                    # Set before COMMIT is sent: the next bytes from the server are its reply.
                    self._armed = False
                    cutting.set()
                copied = copied and not ends  # of this transaction
                to_server.write(head + body)
                await to_server.drain()

    async def _downstream(
        self, server: asyncio.StreamReader, to_client: asyncio.StreamWriter, cutting: asyncio.Event
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await server.read(65536):
                if cutting.is_set():
                    # COMMIT's reply: the server has committed. Dropped, and both sockets
                    # closed by the caller.
                    self.cuts += 1
                    return
                to_client.write(data)
                await to_client.drain()
