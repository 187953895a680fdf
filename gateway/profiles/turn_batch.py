"""Keys asked for during one turn of the event loop, by any number of requests, fetched
in one call.

A worker serves the ~16 requests that are ready in one turn of its loop. When their
customers' cached profiles expire (profiles cached together expire together), each
request would read its own from the database: ~2 ms of round trips apiece on SQLite,
against ~0.3 ms each when read fifty at a time. Here they share one read.

Only callers of the same turn share a fetch, and it starts once they have all asked:
no caller is given an answer read before it asked, so a write committed before the
request is always seen. (Joining a read already under way, as ``SingleFlight`` does,
would not promise that.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


_MOST = 500  # keys per fetch: a database caps parameters (asyncpg: 32,767 a query)


class TurnBatch(Generic[K, V]):
    """``get_many`` batched across the callers of one turn of the event loop."""

    def __init__(
        self, fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]], most: int = _MOST
    ) -> None:
        self._fetch = fetch
        self._most = most
        self._gathering: dict[K, asyncio.Future[V | None]] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def get_many(self, keys: Iterable[K]) -> dict[K, V]:
        """The values of these keys that the fetch found. Its error is every caller's."""
        loop = asyncio.get_running_loop()
        if self._gathering is None:
            self._gathering = {}
            # Runs after everything already ready in this turn, so they can all join.
            loop.call_soon(self._start)
        gathering = self._gathering
        futures: dict[K, asyncio.Future[V | None]] = {}
        for key in keys:
            future = gathering.get(key)
            if future is None:
                future = gathering[key] = loop.create_future()
            futures[key] = future
        if not futures:
            return {}
        # Waited on, not awaited: a caller that is cancelled must not cancel the others'.
        await asyncio.wait(set(futures.values()))
        found: dict[K, V] = {}
        for key, future in futures.items():
            value = future.result()
            if value is not None:
                found[key] = value
        return found

    def _start(self) -> None:
        gathered, self._gathering = self._gathering or {}, None
        keys = list(gathered)
        for start in range(0, len(keys), self._most):
            batch = {key: gathered[key] for key in keys[start : start + self._most]}
            task = asyncio.ensure_future(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: dict[K, asyncio.Future[V | None]]) -> None:
        try:
            fetched = await self._fetch(list(batch))
        except BaseException as exc:
            # Only the fetch was cancelled (at shutdown), not its callers: they get an error.
            error = (
                RuntimeError("the read was cancelled") if not isinstance(exc, Exception) else exc
            )
            for future in batch.values():
                future.set_exception(error)
                future.exception()  # the callers see it; nobody else needs to
            if not isinstance(exc, Exception):
                raise
            return
        for key, future in batch.items():
            future.set_result(fetched.get(key))


__all__ = ["TurnBatch"]
