"""Stored profiles in front of the database: the hot path of a send reads a customer
by email or id thousands of times a minute, and the row rarely changes.

Entries live ``ttl_s`` (short: writers outside this process, such as an import,
are seen within it) and are dropped at once by every write through this service.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from aiocache.base import BaseCache

from gateway.customers import CustomerDraft, CustomerProfile, CustomerStore
from gateway.turn_batch import TurnBatch

_VERSION = 2  # 2: profiles carry stored consents


def _by_id(customer_id: uuid.UUID) -> str:
    return f"profile:v{_VERSION}:id:{customer_id}"


def _by_email(email: str) -> str:
    return f"profile:v{_VERSION}:email:{email}"


class CachedCustomers:
    """The customer store's read and write API, with reads served from the cache."""

    def __init__(self, store: CustomerStore, backend: BaseCache, ttl_s: float) -> None:
        self.store = store
        self._backend = backend
        self._ttl = max(1, int(ttl_s)) if ttl_s > 0 else 0
        # Misses of the requests served in one turn of the loop are read together.
        self._by_id = TurnBatch(self._load_by_id)
        self._by_email = TurnBatch(self._load_by_email)

    async def _load_by_id(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, CustomerProfile]:
        loaded = await self.store.get_many(ids)
        await self._remember(loaded.values())
        return loaded

    async def _load_by_email(self, emails: list[str]) -> dict[str, CustomerProfile]:
        loaded = await self.store.get_many_by_email(emails)
        await self._remember(loaded.values())
        return loaded

    async def _remember(self, profiles: Iterable[CustomerProfile]) -> None:
        if not self._ttl:
            return
        pairs = []
        for profile in profiles:
            pairs.append((_by_id(profile.id), profile))
            if profile.email:
                pairs.append((_by_email(profile.email), profile))
        if pairs:
            await self._backend.multi_set(pairs, ttl=self._ttl)

    async def get(self, customer_id: uuid.UUID) -> CustomerProfile | None:
        return (await self.get_many([customer_id])).get(customer_id)

    async def get_by_email(self, email: str) -> CustomerProfile | None:
        return (await self.get_many_by_email([email])).get(email)

    async def get_many(self, customer_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, CustomerProfile]:
        ids = list(customer_ids)
        # Redis's MGET refuses an empty key list (``customers(ids: [])``).
        cached = (
            await self._backend.multi_get([_by_id(i) for i in ids]) if self._ttl and ids else []
        )
        found = {p.id: p for p in cached if isinstance(p, CustomerProfile)}
        missing = [i for i in ids if i not in found]
        if missing:
            found.update(await self._by_id.get_many(missing))
        return found

    async def get_many_by_email(self, emails: Iterable[str]) -> dict[str, CustomerProfile]:
        wanted = list(emails)
        cached = (
            await self._backend.multi_get([_by_email(e) for e in wanted])
            if self._ttl and wanted
            else []
        )
        found = {p.email: p for p in cached if isinstance(p, CustomerProfile) and p.email}
        missing = [e for e in wanted if e not in found]
        if missing:
            found.update(await self._by_email.get_many(missing))
        return found

    async def get_by_identity(self, source: str, external_id: str) -> CustomerProfile | None:
        return await self.store.get_by_identity(source, external_id)

    async def upsert(self, draft: CustomerDraft) -> CustomerProfile:
        profile = await self.store.upsert(draft)
        await self.forget(profile)
        return profile

    async def forget(self, profile: CustomerProfile, extra_emails: Iterable[str] = ()) -> None:
        """Drop the cached profile (on every instance, when the cache is shared), also
        under ``extra_emails``: addresses it was cached under before a change."""
        emails = {e for e in (profile.email, *extra_emails) if e}
        keys = [_by_id(profile.id)] + [_by_email(e) for e in sorted(emails)]
        for key in keys:
            await self._backend.delete(key)
