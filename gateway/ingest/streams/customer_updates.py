"""After a batch commits: each customer it touched has its cached entries dropped and
one ``customerUpdated`` notification published, however many of its events the batch
held (as the webhook path does per event, coalesced per customer per batch)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from uuid import UUID

from gateway.ingest.notifications import CustomerChange, Notifications
from gateway.ingest.streams.event_batches import CustomerTouch
from gateway.ingest.streams.event_rows import SOURCE
from gateway.profiles.profile_cache import CachedCustomers
from gateway.upstreams.federation import Federation

logger = logging.getLogger("gateway.stream")


class CustomerUpdates:
    def __init__(
        self,
        federation: Federation,
        customers: CachedCustomers,
        notifications: Notifications,
        concurrency: int = 32,
    ) -> None:
        self._federation = federation
        self._customers = customers
        self._notifications = notifications
        self._limit = asyncio.Semaphore(concurrency)

    async def __call__(self, touched: Mapping[UUID, CustomerTouch]) -> None:
        await asyncio.gather(*(self._one(cid, touch) for cid, touch in touched.items()))

    async def _one(self, customer_id: UUID, touch: CustomerTouch) -> None:
        # The write is committed: a failure here must not make the message come back
        # (it would be a duplicate and fix nothing); cached entries expire with their TTL.
        async with self._limit:
            try:
                await self._federation.invalidate(customer_id)
                if touch.profile_changed:
                    await self._forget_profile(customer_id, touch)
                if touch.event_id:
                    await self._notifications.publish(
                        CustomerChange(
                            customer_id=customer_id,
                            source=SOURCE,
                            event_type=touch.event_type,
                            event_id=touch.event_id,
                            fields=tuple(sorted(touch.fields)),
                            occurred_at=touch.occurred_at,
                        )
                    )
            except Exception:
                logger.exception(
                    "cache invalidation or notification failed after commit",
                    extra={"customer_id": str(customer_id)},
                )

    async def _forget_profile(self, customer_id: UUID, touch: CustomerTouch) -> None:
        profile = await self._customers.store.get(customer_id)
        if profile is None:
            return
        await self._customers.forget(profile, touch.old_emails)
        for gone in touch.folded:  # customers folded into this one: gone from the cache too
            await self._federation.invalidate(gone)
            await self._customers.forget(dataclasses.replace(profile, id=gone))
