"""Forgetting a customer everywhere: the erasure, then every cached copy of them.

``Erasure.forget`` removes the stored person; a running gateway would still serve their
profile and their upstream answers from its caches until those expire. This drops them
after the commit, on every instance when the cache is shared (Redis): the profile under
its id and under every e-mail it was cached by (the erased ones included), and the
upstream answers of every configured upstream. The GraphQL ``forgetCustomer`` mutation
and ``gateway retention run`` both erase through it.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

from gateway.privacy.erasure import Erased, Erasure
from gateway.profiles.profile_cache import CachedCustomers
from gateway.recommendations.serving import Recommender
from gateway.upstreams.federation import Federation

ANALYTICS = ("analytics",)  # the upstream kind events feed


class Forgetting:
    def __init__(
        self,
        erasure: Erasure,
        customers: CachedCustomers,
        federation: Federation,
        recommendations: Recommender | None = None,
    ) -> None:
        self.erasure = erasure
        self._customers = customers
        self._federation = federation
        # A serving process's memo of lists and consents (None in a command-line
        # process: it has none, and a server's own memo lives a few seconds).
        self._recommendations = recommendations

    async def forget(self, customer_id: uuid.UUID) -> Erased | None:
        """Erase the customer and drop their cached copies; None when there is no such
        customer."""
        # Read before the erasure: the cache keys are the profile's id and e-mail.
        profile = await self._customers.store.get(customer_id)
        erased = await self.erasure.forget(customer_id)
        if erased is None:
            return None
        # The profile's forget below drops the answers holding them, after the profile.
        await self._federation.invalidate(customer_id, answers=profile is None)
        if self._recommendations is not None:
            self._recommendations.forget()
        if profile is not None:
            await self._customers.forget(profile, extra_emails=erased.emails)
        return erased

    async def events_removed(self, customer_ids: Collection[uuid.UUID]) -> None:
        """Events of these customers were deleted or anonymised: their stored behaviour
        (the analytics upstreams' cached answers) and the whole answers holding them go,
        in one round trip each."""
        if customer_ids:
            await self._federation.invalidate_many(customer_ids, ANALYTICS)
