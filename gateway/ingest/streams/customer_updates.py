"""After a batch commits: each customer it touched has its cached entries dropped and
one ``customerUpdated`` notification published, however many of its events the batch
held (as the webhook path does per event, coalesced per customer per batch): one DEL
for the analytics entries of customers whose calls were only behaviour, one for every
upstream entry of those an identify changed, and one pipeline of PUBLISHes per batch."""

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
ANALYTICS = ("analytics",)  # the upstream kind a behavioural event changes


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
        # The write is committed: a failure here must not make the messages come back
        # (they would be duplicates and fix nothing); cached entries expire with their TTL.
        try:
            # A track or page call changes only what the analytics upstream knows of
            # its customer: the CRM's and the shop's entries stay (at 1,000 customers
            # a batch, building and deleting their keys was a tenth of the consumer's
            # time). An identify, a link or a fold drops every upstream's entries.
            whole = {c for c, t in touched.items() if t.profile_changed or t.folded}
            whole.update(gone for touch in touched.values() for gone in touch.folded)
            behaviour = [c for c in touched if c not in whole]
            if whole:
                await self._federation.invalidate_many(whole)
            if behaviour:
                await self._federation.invalidate_many(behaviour, ANALYTICS)
            changed = [(c, t) for c, t in touched.items() if t.profile_changed]
            await asyncio.gather(*(self._forget_profile(c, t) for c, t in changed))
            await self._notifications.publish_many(
                [
                    CustomerChange(
                        customer_id=customer_id,
                        source=SOURCE,
                        event_type=touch.event_type,
                        event_id=touch.event_id,
                        fields=tuple(sorted(touch.fields)),
                        occurred_at=touch.occurred_at,
                    )
                    for customer_id, touch in touched.items()
                    if touch.event_id
                ]
            )
        except Exception:
            logger.exception(
                "cache invalidation or notification failed after commit",
                extra={"customers": len(touched)},
            )

    async def _forget_profile(self, customer_id: UUID, touch: CustomerTouch) -> None:
        """An identify changed the profile: its cached entry goes (under the e-mail it
        had before too, and under the ids of customers folded into it)."""
        async with self._limit:
            profile = await self._customers.store.get(customer_id)
            if profile is None:
                return
            await self._customers.forget(profile, touch.old_emails)
            for gone in touch.folded:
                await self._customers.forget(dataclasses.replace(profile, id=gone))
