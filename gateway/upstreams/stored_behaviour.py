"""Behaviour served from the store: ``recentEvents``, ``engagement`` and ``cart`` read from
the stored Segment calls instead of the analytics upstream, per field as configured.

Each read takes a batch of customers (a DataLoader's keys) and answers one ``Outcome``
per customer, aligned with them, as ``Federation`` does for the upstreams: the fields
then read the same ``AnalyticsData`` whichever path served it (engagement: the same
``behaviour.Engagement``, counted by the database), and ``sources`` shows
the store as one more source (``store``). A database that cannot be reached fails these
fields alone (``DATABASE_UNAVAILABLE``), never the whole answer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from adapters.config import BehaviourFields
from adapters.errors import UpstreamUnavailable
from adapters.records import AnalyticsEvent
from gateway.errors import DatabaseUnavailable
from gateway.profiles.customers import CustomerProfile
from gateway.upstreams.behaviour import (
    ENGAGEMENT_WINDOW,
    NO_EMAIL_ENGAGEMENT,
    EmailEngagement,
    Engagement,
)
from gateway.upstreams.event_store import EventStore
from gateway.upstreams.federation import EVENTS_WINDOW, AnalyticsData, Outcome, SourceStatus

T = TypeVar("T")
V = TypeVar("V")
STORE = "store"  # the source name ``sources`` shows for fields served from the store


class StoreUnavailable(UpstreamUnavailable):
    """The database holding the events could not be read: these fields fail alone."""

    code = "DATABASE_UNAVAILABLE"


class StoredBehaviour:
    """The behavioural fields configured ``store``, read for a batch at a time."""

    def __init__(self, store: EventStore, fields: BehaviourFields | None = None) -> None:
        self._store = store
        self.fields = (fields or BehaviourFields()).stored()

    def serves(self, field: str) -> bool:
        """Whether ``field`` (``recent_events``, ``engagement``, ``cart``) is read here."""
        return field in self.fields

    async def recent_events(
        self, customers: Sequence[CustomerProfile], depth: int, detailed: bool = True
    ) -> list[Outcome[AnalyticsData]]:
        """Each customer's ``depth`` newest events, newest first (without their
        properties and session ids unless ``detailed``)."""
        return await self._read(
            customers, lambda ids: self._store.recent(ids, depth, detailed), _events
        )

    async def engagement(self, customers: Sequence[CustomerProfile]) -> list[Outcome[Engagement]]:
        """Engagement over the window, counted by the database: one row per customer."""
        since = datetime.now(UTC) - ENGAGEMENT_WINDOW
        return await self._read(
            customers, lambda ids: self._store.engagement(ids, since), _engagement
        )

    async def email_engagement(
        self, customers: Sequence[CustomerProfile]
    ) -> list[Outcome[EmailEngagement]]:
        """Email opens and clicks over the window, from the ESPs' events: always read
        here (no upstream has them), whatever serves the rest of ``engagement``."""
        since = datetime.now(UTC) - ENGAGEMENT_WINDOW
        return await self._read(
            customers,
            lambda ids: self._store.email_engagement(ids, since),
            lambda found: found or NO_EMAIL_ENGAGEMENT,
        )

    async def cart(self, customers: Sequence[CustomerProfile]) -> list[Outcome[AnalyticsData]]:
        """The cart calls the open cart is made of (as many as the upstream path reads)."""
        return await self._read(
            customers, lambda ids: self._store.cart(ids, EVENTS_WINDOW), _events
        )

    async def _read(
        self,
        customers: Sequence[CustomerProfile],
        read: Callable[[list[uuid.UUID]], Awaitable[Mapping[uuid.UUID, V]]],
        shape: Callable[[V | None], T],
    ) -> list[Outcome[T]]:
        started = time.perf_counter()
        fetched_at = datetime.now(UTC)
        try:
            found = await read([c.id for c in customers])
        except DatabaseUnavailable as exc:
            latency = (time.perf_counter() - started) * 1000
            error = StoreUnavailable(STORE, str(exc))
            return [
                Outcome(STORE, "analytics", None, error, latency, fetched_at, SourceStatus.FAILED)
                for _ in customers
            ]
        latency = (time.perf_counter() - started) * 1000
        return [
            Outcome(STORE, "analytics", shape(found.get(c.id)), None, latency, fetched_at)
            for c in customers
        ]


def _events(events: Sequence[AnalyticsEvent] | None) -> AnalyticsData:
    return AnalyticsData(user_id=None, events=tuple(events or ()))


def _engagement(found: Engagement | None) -> Engagement:
    return found or Engagement(sessions=0, page_views=0, last_seen_at=None)
