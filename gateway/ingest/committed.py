"""After a batch of linked records commits (``gateway import``, ``gateway sync``): the
cached copies of every customer it created, linked, updated or folded are dropped, on
every instance when the cache is shared: their upstream answers, their stored profiles
(by id and by each e-mail the batch's records gave) and the whole answers holding them
(gateway/upstreams/response_cache.py). A few round trips per batch, none per customer,
through the same ``Federation.invalidate_many`` and ``CachedCustomers`` the stream
consumer uses."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from gateway.identity.linkage.linker import Decision
from gateway.profiles.profile_cache import CachedCustomers
from gateway.upstreams.federation import Federation

logger = logging.getLogger("gateway.ingest")


class CommittedBatches:
    def __init__(self, federation: Federation, customers: CachedCustomers) -> None:
        self._federation = federation
        self._customers = customers

    async def __call__(self, decisions: Sequence[Decision]) -> None:
        ids: set[uuid.UUID] = set()
        emails: set[str] = set()
        for decision in decisions:
            ids.add(decision.customer_id)
            ids.update(decision.merged)
            record = decision.record
            found = (record.values.get("email"), record.email_key, record.given_email)
            emails.update(e for e in found if e)
        if not ids:
            return
        # The batch is committed: a failure here must not fail the run (the next batch
        # would not be linked); the cached copies then expire with their TTL.
        try:
            # forget_many drops the whole answers holding them, after their profiles.
            await self._federation.invalidate_many(ids, answers=False)
            # Their addresses now too: a record naming its customer by id alone (no
            # email, or another one) left the profile cached under theirs stale.
            emails |= await self._customers.store.emails_of(ids)
            await self._customers.forget_many(ids, emails)
        except Exception:
            logger.exception(
                "cache invalidation failed after commit", extra={"customers": len(ids)}
            )
