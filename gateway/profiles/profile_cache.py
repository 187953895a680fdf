"""Stored profiles in front of the database: the hot path of a send reads a customer
by email or id thousands of times a minute, and the row rarely changes.

Entries live ``ttl_s`` (short: writers outside this process, such as an import,
are seen within it) and are dropped at once by every write through this service.

A profile read in the last fifth of its life is read again in the background while
the cached one is served: profiles cached together (a send's) expire together, and
each request that then missed waited for several database round trips, which made
p99 under load 80-115 ms for the seconds it lasted. Profiles nobody reads still
expire.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from aiocache.base import BaseCache

from gateway.profiles.customers import CustomerDraft, CustomerProfile, CustomerStore
from gateway.profiles.turn_batch import TurnBatch
from gateway.upstreams.cache import GuardedRedisCache
from gateway.upstreams.response_cache import (
    ResponseCache,
    Ticket,
    email_tag,
    id_tag,
    trace_emails,
    trace_expiry,
    trace_ids,
    trace_untagged,
)

_VERSION = 3  # 2: profiles carry stored consents; 3: entries say when to refresh them
_REFRESH_AFTER = 0.8  # of the time to live

logger = logging.getLogger("gateway.profile_cache")


@dataclass(frozen=True, slots=True)
class _Entry:
    profile: CustomerProfile
    refresh_at: float  # wall clock: instances sharing Redis read each other's entries


def _by_id(customer_id: uuid.UUID) -> str:
    return f"profile:v{_VERSION}:id:{customer_id}"


def _by_email(email: str) -> str:
    return f"profile:v{_VERSION}:email:{email}"


class _Reading:
    """A read of profiles under way, registered while it runs."""

    def __init__(self, registry: set[_Reading]) -> None:
        self._registry = registry
        self.dropped: set[str] = set()

    def __enter__(self) -> _Reading:
        self._registry.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._registry.discard(self)


class CachedCustomers:
    """The customer store's read and write API, with reads served from the cache."""

    def __init__(
        self,
        store: CustomerStore,
        backend: BaseCache,
        ttl_s: float,
        responses: ResponseCache | None = None,
    ) -> None:
        self.store = store
        # Whole answers holding a profile go with it (resolvers/http/response_cache.py).
        self._responses = responses
        self._backend = backend
        self._ttl = max(1, int(ttl_s)) if ttl_s > 0 else 0
        # Misses of the requests served in one turn of the loop are read together.
        self._by_id = TurnBatch(self._load_by_id)
        self._by_email = TurnBatch(self._load_by_email)
        self._refreshing: set[Hashable] = set()
        self._refreshes: set[asyncio.Task[None]] = set()
        # Reads under way, each with the cache keys forgotten since it began.
        self._reading: set[_Reading] = set()

    async def _load_by_id(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, CustomerProfile]:
        reading = _Reading(self._reading)
        with reading:
            ticket = await self._ticket()
            loaded = await self.store.get_many(ids)
            await self._remember(loaded.values(), reading, ticket)
        return loaded

    async def _load_by_email(self, emails: list[str]) -> dict[str, CustomerProfile]:
        reading = _Reading(self._reading)
        with reading:
            ticket = await self._ticket()
            loaded = await self.store.get_many_by_email(emails)
            await self._remember(loaded.values(), reading, ticket)
        return loaded

    def _shared(self) -> bool:
        return isinstance(self._backend, GuardedRedisCache) and self._responses is not None

    async def _ticket(self) -> Ticket | None:
        """Shared through Redis: the invalidation counter before a read, to tell a write
        on another instance that committed while it ran (see ``_remember``)."""
        if not self._ttl or self._responses is None or not self._shared():
            return None
        return await self._responses.ticket()

    async def _remember(
        self, profiles: Iterable[CustomerProfile], reading: _Reading, ticket: Ticket | None
    ) -> None:
        """Cache what a read found, except profiles a forget overtook while it ran.
        In this instance, the forget marks the read. On another instance sharing Redis,
        it touched the profile's tags (the response cache's invalidation counter): a
        profile read before that write committed, cached after its forget deleted the
        key, would be served stale for the cache's whole life, and every answer built
        on it stored as fresh. So the tags are read after the write: a profile touched
        since the read began is dropped again, with the answers that read it meanwhile
        (the forget touches the tags before it deletes too: a write seen neither here
        nor by the delete cannot be). Best effort: a read's callers get their profiles
        even if the cache cannot take them."""
        if not self._ttl:
            return
        shared = self._shared()
        if shared and ticket is None:
            return  # Redis did not say where its counter stood: nothing is cached
        pairs: list[tuple[str, _Entry]] = []
        kept: list[CustomerProfile] = []
        refresh_at = time.time() + self._ttl * _REFRESH_AFTER
        for profile in profiles:
            keys = [_by_id(profile.id)] + ([_by_email(profile.email)] if profile.email else [])
            if reading.dropped.isdisjoint(keys):
                entry = _Entry(profile, refresh_at)
                pairs.extend((key, entry) for key in keys)
                kept.append(profile)
        if not pairs:
            return
        try:
            await self._backend.multi_set(pairs, ttl=self._ttl)
            # A forget during that write may have reached Redis before it: drop again.
            for key in reading.dropped.intersection(key for key, _ in pairs):
                await self._backend.delete(key)
            if shared and ticket is not None and self._responses is not None:
                await self._drop_overtaken(kept, ticket, self._responses)
        except Exception:
            logger.warning("profiles read but not cached", exc_info=True)

    async def _drop_overtaken(
        self, kept: list[CustomerProfile], ticket: Ticket, responses: ResponseCache
    ) -> None:
        """Delete again the profiles just cached that a write elsewhere touched since
        ``ticket``, then retract the answers built on them since they were set.

        Only this read's own keys, and no write: touching the tags (as ``forget`` does)
        would be seen by every read on any instance whose ticket predates it, which
        would drop its copy and touch them again, so two instances missing on one
        customer could keep the profile uncached and its answers dropped forever.

        Orderings (W a write: touches the tags, deletes the keys, touches them again;
        A this read: ticket, database, set, check, delete; B another read):
        - A's ticket after W's first touch: A's database read follows W's commit, so
          what A sets is fresh.
        - A's ticket before it, A's set before W's delete: W's delete removes it.
        - A's set after W's delete: A's check follows W's first touch, sees it, and
          A deletes its keys; an answer that read A's copy took its ticket before
          that delete, so before the retraction after it: refused or never served.
        - B overlapping A's delete: the tags are as W left them, so B's check says
          only what W did to B's own read (B keeps a copy read after W; its ticket
          follows W's touch). A's delete may remove B's fresh copy if B set it
          first: a miss later, never a stale copy."""
        tags = {p.id: [id_tag(p.id), *([email_tag(p.email)] if p.email else [])] for p in kept}
        touched = await responses.touched_since(ticket, (t for ts in tags.values() for t in ts))
        stale = [p for p in kept if not touched.isdisjoint(tags[p.id])]
        if stale:
            await self._delete(
                [_by_id(p.id) for p in stale] + [_by_email(p.email) for p in stale if p.email]
            )
            await responses.retract(t for p in stale for t in tags[p.id])

    async def get(self, customer_id: uuid.UUID) -> CustomerProfile | None:
        return (await self.get_many([customer_id])).get(customer_id)

    async def get_by_email(self, email: str) -> CustomerProfile | None:
        return (await self.get_many_by_email([email])).get(email)

    async def get_many(self, customer_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, CustomerProfile]:
        ids = list(customer_ids)
        trace_ids(ids)  # an answer being stored depends on these, found or not
        # Redis's MGET refuses an empty key list (``customers(ids: [])``).
        cached = (
            await self._backend.multi_get([_by_id(i) for i in ids]) if self._ttl and ids else []
        )
        found = {p.id: p for p in self._fresh(cached, self._by_id, lambda p: p.id)}
        missing = [i for i in ids if i not in found]
        if missing:
            found.update(await self._by_id.get_many(missing))
        return found

    async def get_many_by_email(self, emails: Iterable[str]) -> dict[str, CustomerProfile]:
        wanted = list(emails)
        trace_emails(wanted)
        cached = (
            await self._backend.multi_get([_by_email(e) for e in wanted])
            if self._ttl and wanted
            else []
        )
        found = {
            p.email: p for p in self._fresh(cached, self._by_email, lambda p: p.email) if p.email
        }
        missing = [e for e in wanted if e not in found]
        if missing:
            found.update(await self._by_email.get_many(missing))
        trace_ids(p.id for p in found.values())
        return found

    def _fresh(
        self,
        cached: list[Any],
        loader: TurnBatch[Any, CustomerProfile],
        key: Callable[[CustomerProfile], Hashable],
    ) -> list[CustomerProfile]:
        """The cached profiles; those due are read again in the background."""
        now = time.time()
        profiles = []
        due = []
        for entry in cached:
            if isinstance(entry, _Entry):
                profiles.append(entry.profile)
                # Stored with ``ttl`` when its refresh was ``_REFRESH_AFTER`` of it away.
                trace_expiry(entry.refresh_at + self._ttl * (1 - _REFRESH_AFTER))
                if entry.refresh_at <= now and key(entry.profile) not in self._refreshing:
                    due.append(key(entry.profile))
        if due:
            self._refreshing.update(due)
            task = asyncio.ensure_future(self._refresh(loader, due))
            self._refreshes.add(task)
            task.add_done_callback(self._refreshes.discard)
        return profiles

    async def _refresh(self, loader: TurnBatch[Any, CustomerProfile], keys: list[Any]) -> None:
        try:
            await loader.get_many(keys)
        except Exception:
            # Nobody waits for this read: the cached profiles serve until they expire.
            logger.warning("profiles not refreshed ahead of expiry", exc_info=True)
        finally:
            self._refreshing.difference_update(keys)

    async def aclose(self) -> None:
        """Let refreshes under way finish (they are short) before the database goes."""
        if self._refreshes:
            await asyncio.gather(*self._refreshes, return_exceptions=True)

    async def get_by_identity(self, source: str, external_id: str) -> CustomerProfile | None:
        trace_untagged()  # a new identity is no write to a customer an answer holds
        return await self.store.get_by_identity(source, external_id)

    async def upsert(self, draft: CustomerDraft) -> CustomerProfile:
        profile = await self.store.upsert(draft)
        await self.forget(profile)
        return profile

    async def forget(self, profile: CustomerProfile, extra_emails: Iterable[str] = ()) -> None:
        """Drop the cached profile (on every instance, when the cache is shared), also
        under ``extra_emails``: addresses it was cached under before a change."""
        emails = {e for e in (profile.email, *extra_emails) if e}
        await self.forget_many([profile.id], emails)

    async def forget_many(self, customer_ids: Iterable[uuid.UUID], emails: Iterable[str]) -> None:
        """``forget`` for a batch's customers and every e-mail it named: one DEL with
        Redis, and one invalidation of the answers holding any of them (two when shared:
        before the DEL too, for reads on other instances; see ``_remember``)."""
        ids, addresses = list(customer_ids), sorted({e for e in emails if e})
        if not ids and not addresses:
            return
        if self._shared() and self._responses is not None:
            await self._responses.invalidate_customers(ids, addresses)
        await self._drop(ids, addresses)

    async def _drop(self, ids: list[uuid.UUID], addresses: list[str]) -> None:
        keys = [_by_id(i) for i in ids] + [_by_email(e) for e in addresses]
        for reading in self._reading:
            reading.dropped.update(keys)
        await self._delete(keys)
        if self._responses is not None:
            await self._responses.invalidate_customers(ids, addresses)

    async def _delete(self, keys: list[str]) -> None:
        if isinstance(self._backend, GuardedRedisCache):
            await self._backend.delete_many(keys)
        else:
            for key in keys:
                await self._backend.delete(key)
