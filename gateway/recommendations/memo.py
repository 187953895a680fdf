"""A small in-process memo with a time to live, for the serving hot path.

The stored model changes only when ``recs build`` runs, so a customer's list and the
popular lists can be reused for a short while instead of read per request (a SQLite
or Postgres round trip costs about a millisecond; the budget is 20 ms at p99 under
load). Bounded: the least recently stored entries go first.

An entry expires for every request in flight at once: ``fetch`` reads it again once,
and the others wait for that read. Without that, each of them queued its own read
on the database connection, and the slowest waited ~100 ms (the recommendations'
p99 went from 17 to 76-98 ms with the consent memo's 5 s time to live).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

from gateway.upstreams.single_flight import SingleFlight

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    def __init__(self, ttl_s: float, size: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._reads: SingleFlight[K, V] = SingleFlight()

    def get(self, key: K) -> tuple[bool, V | None]:
        """(found, value); an expired entry is not found."""
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > self.ttl_s:
            return False, None
        return True, entry[1]

    def put(self, key: K, value: V) -> None:
        if self.ttl_s <= 0:
            return
        self._entries[key] = (time.monotonic(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    async def fetch(self, key: K, read: Callable[[K], Awaitable[V]]) -> V | None:
        """The remembered value, or ``read`` (once, however many ask at the same time)."""
        found, value = self.get(key)
        if found:
            return value

        async def read_each(keys: list[K]) -> dict[K, V]:
            return {k: await read(k) for k in keys}

        # Absent from the read's answer means None, which is remembered like any value.
        value = (await self._reads.run([key], read_each)).get(key)
        self.put(key, value)  # type: ignore[arg-type]
        return value

    async def fetch_many(
        self, keys: Sequence[K], read_many: Callable[[list[K]], Awaitable[Mapping[K, V]]]
    ) -> dict[K, V | None]:
        """``fetch`` for many keys: the misses are read in one call of ``read_many``."""
        found: dict[K, V | None] = {}
        missing: list[K] = []
        for key in dict.fromkeys(keys):
            hit, value = self.get(key)
            if hit:
                found[key] = value
            else:
                missing.append(key)
        if missing:
            fresh = await self._reads.run(missing, read_many)
            for key in missing:
                value = fresh.get(key)
                self.put(key, value)  # type: ignore[arg-type]
                found[key] = value
        return found

    def clear(self) -> None:
        self._entries.clear()
