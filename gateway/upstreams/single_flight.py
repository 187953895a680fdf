"""One fetch per key at a time, however many requests ask for it at once.

When a short-lived entry expires under load (a product's stock, every 30 s), every
request in flight misses it at the same moment; without this each would call the
upstream, and all of them would wait on the slowest of those calls. Here the first
caller fetches the keys nobody is fetching yet, and the others wait for that answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Future[V | None]] = {}

    def __len__(self) -> int:
        """Keys being fetched right now."""
        return len(self._flights)

    async def run(
        self, keys: Sequence[K], fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]]
    ) -> dict[K, V]:
        """The values of these keys (absent: the fetch did not find them). Keys already
        being fetched are waited for; ``fetch`` gets the others. The fetch's error is
        every waiter's error; a waiter whose leader was cancelled fetches for itself."""
        loop = asyncio.get_running_loop()
        joined: dict[K, asyncio.Future[V | None]] = {}
        leading: dict[K, asyncio.Future[V | None]] = {}
        for key in dict.fromkeys(keys):
            if key in self._flights:
                joined[key] = self._flights[key]
            else:
                leading[key] = self._flights[key] = loop.create_future()
        found: dict[K, V] = {}
        try:
            if leading:
                fetched = await fetch(list(leading))
                for key, future in leading.items():
                    future.set_result(fetched.get(key))
        except asyncio.CancelledError:
            for future in leading.values():
                future.cancel()
            raise
        except BaseException as exc:
            for future in leading.values():
                future.set_exception(exc)
                future.exception()  # the waiters see it; nobody else needs to
            raise
        finally:
            for key in leading:
                self._flights.pop(key, None)
        retry: list[K] = []
        for key, future in {**leading, **joined}.items():
            try:
                value = await asyncio.shield(future)
            except asyncio.CancelledError:
                if not future.cancelled():
                    raise  # this caller was cancelled, not the leader
                retry.append(key)
                continue
            if value is not None:
                found[key] = value
        if retry:
            found.update(await self.run(retry, fetch))
        return found


__all__ = ["SingleFlight"]
