"""The shared cache of upstream answers: versioned keys, per-upstream freshness, stale
entries kept for outages, one-customer invalidation, and single flight across instances.

Keys read ``gw:v{VERSION}:{upstream}:{customer_id}``: bump ``VERSION`` whenever the
cached records change shape, and no instance will read an entry it cannot decode.
In memory (one process) by default; in Redis when several instances share the work.

With Redis, every operation goes through the process's ``RedisGuard``: a Redis that is
down or slow reads as a miss (callers fetch from Postgres and the upstreams), writes
are skipped, deletes that fail are owed and replayed, and locks across instances are
given up (single flight stays per process).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiocache import Cache, RedisCache
from aiocache.base import BaseCache
from aiocache.serializers import NullSerializer

from gateway.upstreams.cache_serializer import TypedJsonSerializer
from gateway.upstreams.redis_client import RedisGuard
from gateway.upstreams.response_cache import ResponseCache, Ticket, id_tag

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


def build_cache(url: str, guard: RedisGuard | None = None) -> BaseCache:
    """An aiocache backend from ``memory://`` or (with the process's guard)
    ``redis://host:port/db``."""
    if url.startswith("memory") or guard is None:
        # Same process: keep the (immutable) records themselves; unpickling pydantic
        # records cost about 1.3 ms per customer with events. No timeout: nothing here
        # waits on I/O, and aiocache's timeout wraps every call in a task of its own.
        return Cache(Cache.MEMORY, serializer=NullSerializer(), namespace=NAMESPACE, timeout=None)
    # Typed JSON, not aiocache's pickles: whoever can write to the Redis must not be
    # able to run code on the instances reading it.
    return GuardedRedisCache(guard, serializer=TypedJsonSerializer(), namespace=NAMESPACE)


class GuardedRedisCache(RedisCache):  # type: ignore[misc]  # aiocache is untyped
    """aiocache's Redis backend on the process's client, every call through the guard
    (which bounds its time: aiocache's own timeout is off)."""

    def __init__(self, guard: RedisGuard, **kwargs: Any) -> None:
        super().__init__(timeout=None, **kwargs)
        self.guard = guard
        self.client = guard.client  # one client (and pool) per process, not one per user

    async def get(self, key: str, default: Any = None, **kwargs: Any) -> Any:
        if self.guard.owed(self._build_key(key)):
            return default
        parent: Any = super()
        return await self.guard.call("get", lambda: parent.get(key, default, **kwargs), default)

    async def multi_get(self, keys: list[str], **kwargs: Any) -> list[Any]:
        misses: list[Any] = [None] * len(keys)
        parent: Any = super()
        found: list[Any] = await self.guard.call(
            "multi_get", lambda: parent.multi_get(keys, **kwargs), misses
        )
        if self.guard.unfinished:  # invalidated during an outage: not to be served
            owed = self.guard.owed
            found = [
                None if owed(self._build_key(k)) else v for k, v in zip(keys, found, strict=True)
            ]
        return found

    async def set(self, key: str, value: Any, **kwargs: Any) -> bool:
        parent: Any = super()
        return bool(await self.guard.call("set", lambda: parent.set(key, value, **kwargs), False))

    async def multi_set(self, pairs: list[tuple[str, Any]], **kwargs: Any) -> bool:
        parent: Any = super()
        return bool(
            await self.guard.call("multi_set", lambda: parent.multi_set(pairs, **kwargs), False)
        )

    async def delete(self, key: str, **kwargs: Any) -> int:
        """Drop the entry now, or when Redis answers again (read as a miss until then)."""
        return int(await self.guard.delete([self._build_key(key)]))

    async def delete_many(self, keys: Sequence[str]) -> bool:
        """Drop many entries in one DEL (or when Redis answers again)."""
        return await self.guard.delete([self._build_key(key) for key in keys])

    async def exists(self, key: str, **kwargs: Any) -> bool:
        parent: Any = super()
        return bool(await self.guard.call("exists", lambda: parent.exists(key, **kwargs), False))

    async def close(self, *args: Any, **kwargs: Any) -> None:
        """The client is the process's: ``Services`` closes it once."""


class UpstreamCache:
    def __init__(self, backend: BaseCache) -> None:
        self.backend = backend
        # Shared across instances only through Redis; in memory, claims are moot.
        self.guard: RedisGuard | None = getattr(backend, "guard", None)
        # Whole answers built on these entries, in the same place (memory or Redis).
        self.responses = ResponseCache(self.guard)

    @staticmethod
    def key(upstream: str, customer_id: object) -> str:
        return f"v{VERSION}:{upstream}:{customer_id}"

    async def get_many(self, upstream: str, ids: Sequence[object]) -> dict[object, Entry]:
        if not ids:
            return {}
        values = await self.backend.multi_get([self.key(upstream, i) for i in ids])
        return {i: v for i, v in zip(ids, values, strict=True) if isinstance(v, Entry)}

    async def get_across(
        self, upstreams: Sequence[str], ids: Sequence[object]
    ) -> dict[object, list[Entry]]:
        """Each id's entries under any of ``upstreams``, in their order, in one read."""
        if not ids or not upstreams:
            return {}
        pairs = [(i, u) for i in ids for u in upstreams]
        values = await self.backend.multi_get([self.key(u, i) for i, u in pairs])
        found: dict[object, list[Entry]] = {}
        for (i, _), value in zip(pairs, values, strict=True):
            if isinstance(value, Entry):
                found.setdefault(i, []).append(value)
        return found

    async def set_many(self, upstream: str, entries: Mapping[Any, Entry], ttl_s: float) -> None:
        if entries and ttl_s > 0:
            pairs = [(self.key(upstream, i), e) for i, e in entries.items()]
            await self.backend.multi_set(pairs, ttl=max(1, int(ttl_s)))

    async def invalidate(self, customer_id: object, upstreams: Iterable[str]) -> None:
        """Drop every entry of one customer; with Redis, every instance sees it at once."""
        for upstream in upstreams:
            await self.backend.delete(self.key(upstream, customer_id))

    async def invalidate_many(
        self, customer_ids: Iterable[object], upstreams: Sequence[str]
    ) -> None:
        """``invalidate`` for many customers: one round trip with Redis (a stream batch
        touches a thousand customers; a DEL each took longer than the batch's write)."""
        ids = list(customer_ids)
        keys = [self.key(upstream, c) for c in ids for upstream in upstreams]
        if isinstance(self.backend, GuardedRedisCache):
            # Shared: the answers' tags are touched before the DEL too (the caller
            # touches them after it), so that a fetch on another instance that caches
            # after the DEL sees this write (``drop_overtaken``).
            await self.responses.invalidate_customers(ids)
            await self.backend.delete_many(keys)
            return
        for key in keys:
            await self.backend.delete(key)

    async def ticket(self, ttl_s: float) -> Ticket | None:
        """Shared through Redis: where the invalidations stand, before a fetch whose
        answers are kept ``ttl_s`` (none when 0: no round trip for nothing to check)."""
        if self.guard is None or ttl_s <= 0:
            return None
        return await self.responses.ticket()

    async def keep_fetched(
        self,
        upstream: str,
        entries: Mapping[Any, Entry],
        ttl_s: float,
        ticket: Ticket | None,
    ) -> None:
        """Cache what a fetch got, unless the cache is shared and its ``ticket`` (taken
        before the fetch) is unknown: a write elsewhere meanwhile could not be told (as
        ``CachedCustomers`` does with profiles), and Redis is failing anyway."""
        if not entries or ttl_s <= 0 or (self.guard is not None and ticket is None):
            return
        await self.set_many(upstream, entries, ttl_s)
        await self.drop_overtaken(upstream, list(entries), ticket)

    async def drop_overtaken(
        self, upstream: str, ids: Sequence[object], ticket: Ticket | None
    ) -> None:
        """Delete again the answers just cached under ``upstream`` of customers a write
        on another instance touched since ``ticket`` (taken before their fetch):
        fetched before that write, cached after its DEL, they would be served, and the
        whole answers built on them stored, for their life. The write touches the tags
        before its DEL too (``Federation.invalidate_many``), so this check or that DEL
        sees it. Only these keys, and the whole answers retracted, not invalidated: a
        write's tag touch here would overtake every other fetch of the customer whose
        ticket predates it, on any instance, which would drop its answer and touch the
        tags again, without end (the orderings: ``CachedCustomers._drop_overtaken``)."""
        if ticket is None or not ids:
            return
        tags = {i: id_tag(i) for i in ids}
        touched = await self.responses.touched_since(ticket, tags.values())
        stale = [i for i, tag in tags.items() if tag in touched]
        if not stale:
            return
        keys = [self.key(upstream, i) for i in stale]
        if isinstance(self.backend, GuardedRedisCache):
            await self.backend.delete_many(keys)
        else:
            for key in keys:
                await self.backend.delete(key)
        await self.responses.retract(tags[i] for i in stale)

    async def claim(
        self, upstream: str, ids: Sequence[object]
    ) -> tuple[list[object], list[object]]:
        """Split ids into those this instance must fetch and those another instance is
        fetching right now (across instances only; in-process flights are the caller's)."""
        if self.guard is None or not ids:
            return list(ids), []
        token = uuid.uuid4().hex
        pipe = self.guard.client.pipeline(transaction=False)
        for i in ids:
            pipe.set(self._lock(upstream, i), token, nx=True, px=int(LOCK_LEASE_S * 1000))
        # Without Redis nobody can tell what another instance fetches: fetch them all.
        won = await self.guard.call("claim", pipe.execute, [True] * len(ids))
        mine = [i for i, ok in zip(ids, won, strict=True) if ok]
        theirs = [i for i, ok in zip(ids, won, strict=True) if not ok]
        return mine, theirs

    async def release(self, upstream: str, ids: Sequence[object]) -> None:
        if self.guard is not None and ids:
            # Best effort: a lock left behind lapses after its lease.
            client, locks = self.guard.client, [self._lock(upstream, i) for i in ids]
            await self.guard.call("release", lambda: client.delete(*locks), None)

    async def wait_for(
        self, upstream: str, ids: Sequence[object], fresh_for_s: float
    ) -> dict[object, Entry]:
        """Entries another instance is fetching, once written and fresh; whatever is
        missing when its lock goes away (its fetch failed) is the caller's to fetch."""
        deadline = time.monotonic() + LOCK_LEASE_S
        found: dict[object, Entry] = {}
        pending = list(ids)

        async def collect() -> list[object]:
            now = datetime.now(UTC)
            for i, entry in (await self.get_many(upstream, pending)).items():
                if entry.age_s(now) <= fresh_for_s:
                    found[i] = entry
            return [i for i in pending if i not in found]

        while pending and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
            pending = await collect()
            if pending and not await self._any_locked(upstream, pending):
                # The leader writes its entries, then releases its locks: both may have
                # happened between our read and this check, so read once more before
                # taking what is still missing as failed (else: a second upstream call).
                await collect()
                break  # the other instance gave up (its upstream failed): fetch ourselves
        return found

    async def _any_locked(self, upstream: str, ids: Sequence[object]) -> bool:
        if self.guard is None:
            return False
        client, locks = self.guard.client, [self._lock(upstream, i) for i in ids]
        return bool(await self.guard.call("locked", lambda: client.exists(*locks), 0))

    @staticmethod
    def _lock(upstream: str, customer_id: object) -> str:
        return f"{NAMESPACE}:lock:v{VERSION}:{upstream}:{customer_id}"

    async def ready(self) -> bool:
        """Whether the shared cache answers now (always, in memory)."""
        return self.guard is None or await self.guard.ready()

    async def close(self) -> None:
        await self.backend.close()


__all__ = ["Entry", "GuardedRedisCache", "UpstreamCache", "build_cache"]
