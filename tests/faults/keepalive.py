"""A deliberately plain HTTP/1.1 client that keeps one connection open and says when the
server dropped it: what an ESP's connection pool lives through, counted exactly.

httpx would quietly open a new connection when it finds a pooled one closed; here a
connection that ends (EOF, reset) before a response was read counts as a reset, and
the request is not retried on a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import orjson


@dataclass(slots=True)
class Answer:
    status: int  # 0: the connection was dropped instead
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body)

    @property
    def code(self) -> str | None:
        """The error code of a JSON error answer, wherever the body puts it."""
        try:
            body = self.json()
        except orjson.JSONDecodeError:
            return None
        if not isinstance(body, dict):
            return None
        errors = body.get("errors") or []
        if errors and isinstance(errors[0], dict):
            code = (errors[0].get("extensions") or {}).get("code")
            if isinstance(code, str):
                return code
        code = body.get("code")
        return code if isinstance(code, str) else None


DROPPED = Answer(0, {}, b"")


@dataclass
class KeepAliveConnection:
    host: str
    port: int
    opened: int = 0  # connections opened: 1 for a whole run when none was dropped
    _streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = field(default=None)

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> Answer:
        """One request on the open connection (opened first if there is none)."""
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
            self.opened += 1
        reader, writer = self._streams
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            await writer.drain()
            status_line = await reader.readuntil(b"\r\n")
            found: dict[str, str] = {}
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.decode("latin-1").partition(":")
                found[name.strip().lower()] = value.strip()
            content = await reader.readexactly(int(found.get("content-length", "0")))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await self.close()
            return DROPPED
        if found.get("connection", "").lower() == "close":
            await self.close()  # said so, and answered: not a reset, but counted by opened
        return Answer(int(status_line.split()[1]), found, content)

    async def close(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
