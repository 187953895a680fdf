"""The shared cache of upstream answers: versioned keys, per-upstream freshness, stale
entries kept for outages, one-customer invalidation, and single flight across instances.

Keys read ``gw:v{VERSION}:{upstream}:{customer_id}``: bump ``VERSION`` whenever the
cached records change shape, and no instance will read an entry it cannot decode.
In memory (one process) by default; in Redis when several instances share the work.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiocache import Cache
from aiocache.base import BaseCache
from aiocache.serializers import NullSerializer

from gateway.cache_serializer import TypedJsonSerializer

VERSION = 1
NAMESPACE = "gw"
LOCK_LEASE_S = 5.0  # longer than one upstream call's deadline is not useful: it is retried
_POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached answer and when the upstream gave it."""

    value: Any
    fetched_at: datetime

    def age_s(self, now: datetime) -> float:
        return (now - self.fetched_at).total_seconds()


def build_cache(url: str) -> BaseCache:
    """An aiocache backend from ``memory://`` or ``redis://host:port/db``."""
    if url.startswith("memory"):
        # Same process: keep the (immutable) records themselves; unpickling pydantic
        # records cost about 1.3 ms per customer with events. No timeout: nothing here
        # waits on I/O, and aiocache's timeout wraps every call in a task of its own.
        return Cache(Cache.MEMORY, serializer=NullSerializer(), namespace=NAMESPACE, timeout=None)
    cache = Cache.from_url(url)
    # Typed JSON, not aiocache's pickles: whoever can write to the Redis must not be
    # able to run code on the instances reading it.
    cache.serializer = TypedJsonSerializer()
    cache.namespace = NAMESPACE
    return cache


class UpstreamCache:
    def __init__(self, backend: BaseCache) -> None:
        self.backend = backend
        self.shared = backend.NAME == "redis"

    @staticmethod
    def key(upstream: str, customer_id: object) -> str:
        return f"v{VERSION}:{upstream}:{customer_id}"

    async def get_many(self, upstream: str, ids: Sequence[object]) -> dict[object, Entry]:
        if not ids:
            return {}
        values = await self.backend.multi_get([self.key(upstream, i) for i in ids])
        return {i: v for i, v in zip(ids, values, strict=True) if isinstance(v, Entry)}

    async def set_many(self, upstream: str, entries: Mapping[Any, Entry], ttl_s: float) -> None:
        if entries and ttl_s > 0:
            pairs = [(self.key(upstream, i), e) for i, e in entries.items()]
            await self.backend.multi_set(pairs, ttl=max(1, int(ttl_s)))

    async def invalidate(self, customer_id: object, upstreams: Iterable[str]) -> None:
        """Drop every entry of one customer; with Redis, every instance sees it at once."""
        for upstream in upstreams:
            await self.backend.delete(self.key(upstream, customer_id))

    async def claim(
        self, upstream: str, ids: Sequence[object]
    ) -> tuple[list[object], list[object]]:
        """Split ids into those this instance must fetch and those another instance is
        fetching right now (across instances only; in-process flights are the caller's)."""
        if not self.shared or not ids:
            return list(ids), []
        client = self.backend.client
        token = uuid.uuid4().hex
        pipe = client.pipeline(transaction=False)
        for i in ids:
            pipe.set(self._lock(upstream, i), token, nx=True, px=int(LOCK_LEASE_S * 1000))
        won = await pipe.execute()
        mine = [i for i, ok in zip(ids, won, strict=True) if ok]
        theirs = [i for i, ok in zip(ids, won, strict=True) if not ok]
        return mine, theirs

    async def release(self, upstream: str, ids: Sequence[object]) -> None:
        if self.shared and ids:
            await self.backend.client.delete(*(self._lock(upstream, i) for i in ids))

    async def wait_for(
        self, upstream: str, ids: Sequence[object], fresh_for_s: float
    ) -> dict[object, Entry]:
        """Entries another instance is fetching, once written and fresh; whatever is
        missing when its lock goes away (its fetch failed) is the caller's to fetch."""
        deadline = time.monotonic() + LOCK_LEASE_S
        found: dict[object, Entry] = {}
        pending = list(ids)
        while pending and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
            now = datetime.now(UTC)
            for i, entry in (await self.get_many(upstream, pending)).items():
                if entry.age_s(now) <= fresh_for_s:
                    found[i] = entry
            pending = [i for i in pending if i not in found]
            if pending and not await self._any_locked(upstream, pending):
                break  # the other instance gave up (its upstream failed): fetch ourselves
        return found

    async def _any_locked(self, upstream: str, ids: Sequence[object]) -> bool:
        return bool(await self.backend.client.exists(*(self._lock(upstream, i) for i in ids)))

    @staticmethod
    def _lock(upstream: str, customer_id: object) -> str:
        return f"{NAMESPACE}:lock:v{VERSION}:{upstream}:{customer_id}"

    async def ready(self) -> bool:
        try:
            await self.backend.exists("ready-probe")
        except Exception:
            return False
        return True

    async def close(self) -> None:
        await self.backend.close()


__all__ = ["Entry", "UpstreamCache", "build_cache"]
