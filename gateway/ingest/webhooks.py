"""Webhooks from the CRM (HubSpot), the shop (Shopify) and analytics (Segment).

Received by ``POST /webhooks/{source}`` (resolvers/http/webhooks.py), which
gateway/ingest/webhook_receiver.py serves: verify the source's signature over the raw
body, validate the body into ``InboundEvent``s; then here, per event, in one transaction:
claim the event id (the events table's unique (source, event_id) makes a replay a
no-op) and, where that id is not signed (Shopify's header), a digest of the signed body
(``webhook_receipts``: a captured body resent under a new id is a duplicate too);
link the record to a unified customer through the identity ``Resolver`` (its key
locks serialise two webhooks for one new email), and store what changed. Only after
the commit: drop the customer's cached entries on every instance and publish a change
notification, so no one is told about, or re-reads, a write that might still roll back.

What protects each source against a replayed request: Shopify signs only the body, so
its digest is the dedupe key (besides the unsigned id); HubSpot signs method, URI, body
and a timestamp (refused after 5 minutes) and its event ids are inside that body;
Segment signs the body, which carries the ``messageId``. Replays of an erased person's
events are refused by the tombstones, whatever was deleted with them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from gateway.db.access_models import EventSubject, WebhookReceipt
from gateway.db.models import Customer, Event, Identity, utcnow
from gateway.db.retries import (
    DEFAULT_RETRY,
    RetryPolicy,
    retry_transaction,
    stale_if_customer_gone,
)
from gateway.experiments.tracking import Tracker
from gateway.identity import DEFAULT_CONFIG, IdentityConfig, PreparedRecord, RecordError, Resolver
from gateway.identity import prepare as prepare_record
from gateway.identity.linkage.resolution import lock_keys, record_keys
from gateway.identity.observations import insert_reported
from gateway.identity.source_ids import DEFAULT_SOURCE_IDS, SourceIds
from gateway.identity.values import email_parts, phone_key
from gateway.ingest.esp_batches import StoredBatch, store_batch
from gateway.ingest.json_text import PayloadError
from gateway.ingest.notifications import CustomerChange, Notifications
from gateway.ingest.webhook_payloads import InboundEvent
from gateway.privacy.consent import Purpose, refusing_analytics, state_many
from gateway.privacy.erasure_scope import subject_key
from gateway.privacy.suppressions import Suppressions
from gateway.privacy.tombstones import Tombstones
from gateway.profiles.profile_cache import CachedCustomers
from gateway.upstreams.federation import Federation

logger = logging.getLogger("gateway.webhooks")

# "erased": the record names a forgotten customer; acknowledged, nothing stored.
# "no_consent": a Segment call of a customer with a stored "no" to analytics (the
# stream's rule): acknowledged, so the sender does not retry, and the call is not kept;
# an identify's traits still reach the profile, as they do from the stream.
# "ignored": an ESP event for an address no customer has (an unsubscribe is kept as a
# suppression), or a Mandrill event older than the replay bound; "rejected": an ESP
# event with a field no retry can fix. Both acknowledged, no event stored.
Status = Literal["processed", "duplicate", "erased", "no_consent", "ignored", "rejected"]
# The source whose calls are behavioural analytics, gated by the analytics consent.
ANALYTICS_SOURCE = "segment"


@dataclass(frozen=True, slots=True)
class Ingested:
    event_id: str
    status: Status
    customer_id: uuid.UUID | None
    reason: str | None = None  # why a skipped event was not stored, and its field
    field: str | None = None


@dataclass(frozen=True, slots=True)
class _Stored:
    """What one committed transaction did, for the work that follows the commit."""

    result: Ingested
    old_email: str | None = None
    folded: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True, slots=True)
class _Prepared:
    event: InboundEvent
    record: PreparedRecord | None


class WebhookIngest:
    """Stores events and the profile changes they carry; plain service, no HTTP."""

    def __init__(
        self,
        engine: AsyncEngine,
        federation: Federation,
        customers: CachedCustomers,
        notifications: Notifications,
        tombstones: Tombstones,
        config: IdentityConfig = DEFAULT_CONFIG,
        source_ids: SourceIds = DEFAULT_SOURCE_IDS,
        retry: RetryPolicy = DEFAULT_RETRY,
        tracker: Tracker | None = None,
    ) -> None:
        self._retry = retry
        self._tracker = tracker  # clicks on links it signed are attributed to their lists
        self._tombstones = tombstones
        self._suppressions = Suppressions(tombstones, config)
        self._source_ids = source_ids
        self._engine = engine
        self._federation = federation
        self._customers = customers
        self._notifications = notifications
        self._config = config

    def prepare(self, events: Sequence[InboundEvent]) -> list[_Prepared]:
        """Validate every record before anything is written: one bad event in a batch
        refuses the batch, so the source's retry sees the same answer."""
        prepared = []
        for position, event in enumerate(events):
            try:
                record = (
                    prepare_record(event.record, event.source, self._config, self._source_ids)
                    if event.record is not None
                    else None
                )
            except RecordError as exc:
                where = f"{position}.{exc.field}" if len(events) > 1 else exc.field
                raise PayloadError(f"{where}: {str(exc).split(': ', 1)[-1]}", where) from None
            prepared.append(_Prepared(event, record))
        return prepared

    async def ingest(self, item: _Prepared) -> Ingested:
        """Store one event in its own transaction, run again from the start after a
        deadlock or serialization failure; what it raises was not stored."""
        event = item.event
        stored = await retry_transaction(lambda: self._store(item), "webhook_ingest", self._retry)
        refused = stored.result
        if refused.status == "no_consent" and refused.customer_id is not None:
            # The call is not kept, but the identify's link and traits were committed.
            await self._after_commit(refused.customer_id, stored.old_email, event, stored.folded)
            return refused
        if stored.result.status != "processed":
            return stored.result
        customer_id = stored.result.customer_id
        logger.info(
            "webhook event stored",
            extra={
                "source": event.source,
                # The kind only: a Segment track's name is the sender's free text.
                "event_type": event.type.partition(":")[0],
                "event_id": event.event_id,
                "customer_id": str(customer_id) if customer_id else None,
            },
        )
        if customer_id is not None:
            await self._after_commit(customer_id, stored.old_email, event, stored.folded)
        return stored.result

    async def ingest_batch(self, events: Sequence[InboundEvent]) -> list[Ingested]:
        """An ESP's batch in one transaction (gateway/ingest/esp_batches.py), run again
        from the start after a deadlock; what it raises was not stored, none of it."""
        subjects = [self._subjects(event) for event in events]

        async def store() -> StoredBatch:
            # A customer named, then merged away or erased: again, not a 500 to the ESP.
            async with self._engine.begin() as connection, stale_if_customer_gone():
                return await store_batch(
                    connection, events, subjects, self._tombstones, self._tracker, self._config
                )

        stored = await retry_transaction(store, "webhook_ingest", self._retry)
        if events:
            logger.info(
                "webhook batch stored",
                extra={
                    "source": events[0].source,
                    "events": len(events),
                    "stored": sum(status == "processed" for status, _ in stored.statuses),
                },
            )
        await self._after_batch(stored)
        return [
            Ingested(event.event_id, status, customer)
            for event, (status, customer) in zip(events, stored.statuses, strict=True)
        ]

    async def _after_batch(self, stored: StoredBatch) -> None:
        """After an ESP batch's commit: opens and clicks drop the stored answers that may
        hold them; a consent or attribute changed drops the cached profile too, by id, by
        the address named and by the one held now (read after the commit: an old address's
        unsubscribe, or one changed meanwhile, must not leave it at yes); then announced."""
        changes, profiles = [], {}
        for customer_id, (event, fields) in stored.changed.items():
            changes.append(CustomerChange.of_event(customer_id, event, tuple(sorted(fields))))
            if not fields <= {"engagement"}:
                profiles[customer_id] = event.recipient
        # The writes are committed: a failure here must not make the ESP retry.
        try:
            if profiles:
                await self._federation.invalidate_many(profiles, answers=False)
                held = await self._customers.store.emails_of(profiles)
                named = [e for e in profiles.values() if e]
                await self._customers.forget_many(profiles, [*named, *held])
            engaged = [c.customer_id for c in changes if c.customer_id not in profiles]
            if engaged:
                await self._federation.cache.responses.invalidate_customers(engaged)
            await self._notifications.publish_many(changes)
        except Exception:
            logger.exception("cache invalidation or notification failed after commit")

    async def _store(self, item: _Prepared) -> _Stored:
        event = item.event
        subjects = self._subjects(event)
        async with self._engine.connect() as connection, connection.begin() as transaction:
            if await self._erased(connection, item.record, subjects):
                # Acknowledged so the source stops retrying; not even the event is kept.
                return _Stored(Ingested(event.event_id, "erased", None))
            # A copy of this event delivered at the same time waits here (on the key
            # locks above, or on the unique event id) until this one commits, then
            # finds it stored: a duplicate, never an error.
            claimed = await _claim(connection, event)
            if claimed is None or not await _receipt(connection, event, claimed):
                await transaction.rollback()  # the claim, when only the receipt was seen
                return _Stored(Ingested(event.event_id, "duplicate", None))
            customer_id, old_email = None, None
            folded: tuple[uuid.UUID, ...] = ()
            if item.record is not None:
                old_email = await _owner_email(connection, item.record)
                customer_id, folded = await self._link(connection, item.record)
                # Values beside the record (HubSpot's lifecycle stage…).
                await insert_reported(
                    connection,
                    customer_id,
                    (item.record.source, item.record.external_id),
                    event.attributes,
                    (event.source, event.occurred_at),
                )
                if event.consent is not None:  # the CRM's own, dated by its change
                    purpose, granted = event.consent
                    at = {customer_id: min(event.occurred_at, utcnow())}
                    await state_many(
                        connection, Purpose(purpose), granted, {customer_id: event.source}, at
                    )
                if event.source == ANALYTICS_SOURCE and await refusing_analytics(
                    connection, {customer_id}
                ):
                    await connection.execute(delete(Event).where(Event.id == claimed))
                    result = Ingested(event.event_id, "no_consent", customer_id)
                    return _Stored(result, old_email, folded)
            if subjects:
                await connection.execute(
                    insert(EventSubject),
                    [{"event_id": claimed, "digest": digest} for digest in sorted(subjects)],
                )
            if customer_id is not None:
                await connection.execute(
                    update(Event).where(Event.id == claimed).values(customer_id=customer_id)
                )
        return _Stored(Ingested(event.event_id, "processed", customer_id), old_email, folded)

    def _subjects(self, event: InboundEvent) -> set[str]:
        return subject_digests(event, self._tombstones, self._config)

    async def _erased(
        self, connection: AsyncConnection, record: PreparedRecord | None, subjects: set[str]
    ) -> bool:
        # Under the record's key locks and a lock per identifier it carries, held to
        # commit: an erasure naming any of them either committed before (its tombstones
        # are seen here) or waits for this event (and removes it).
        keys = [*(record_keys(record) if record else ()), *map(subject_key, subjects)]
        if not keys:
            return False
        await lock_keys(connection, keys)
        digests = (self._tombstones.of_record(record) if record else set()) | subjects
        return bool(await self._tombstones.blocked(connection, digests))

    async def _link(
        self, connection: AsyncConnection, record: PreparedRecord
    ) -> tuple[uuid.UUID, tuple[uuid.UUID, ...]]:
        """The record's customer, and the stored customers the link folded into it (in
        a savepoint of this transaction: the key locks are held to its commit)."""
        sessions = async_sessionmaker(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        resolver = Resolver(sessions, self._config, retry=None, suppressions=self._suppressions)
        (decision,) = await resolver.link([record])
        return decision.customer_id, decision.merged

    async def _after_commit(
        self,
        customer_id: uuid.UUID,
        old_email: str | None,
        event: InboundEvent,
        folded: tuple[uuid.UUID, ...] = (),
    ) -> None:
        # The write is committed: a failure here must not make the source retry (the
        # retry would be a duplicate and fix nothing); entries expire with their TTL.
        try:
            await self._federation.invalidate(customer_id)
            profile = await self._customers.store.get(customer_id)
            if profile is not None:
                await self._customers.forget(profile)
                # Customers folded into this one are gone: their cached profiles too.
                for gone in folded:
                    await self._federation.invalidate(gone)
                    await self._customers.forget(dataclasses.replace(profile, id=gone))
                if old_email and old_email != profile.email:
                    await self._customers.forget(dataclasses.replace(profile, email=old_email))
            await self._notifications.publish(CustomerChange.of_event(customer_id, event))
        except Exception:
            logger.exception(
                "cache invalidation or notification failed after commit",
                extra={"customer_id": str(customer_id), "event_id": event.event_id},
            )


def subject_digests(
    event: InboundEvent, tombstones: Tombstones, config: IdentityConfig
) -> set[str]:
    """Digests of the identifiers the event carries beyond its record (as tombstones
    hash them), so an erasure finds the event and a tombstone refuses it."""
    digests: set[str] = set()
    for kind, value in event.subjects:
        if kind == "anonymous":
            digests.add(tombstones.anonymous_digest(event.source, value))
        elif kind == "email" and value == event.recipient:
            # An ESP event's recipient is normalized already (esp_payloads): normalizing
            # again cost a 1,000-event batch 30 ms.
            digests.add(tombstones.digest("email", value))
        elif kind == "email":
            digests.add(tombstones.email_digest(value) or "")
            with contextlib.suppress(ValueError):  # not an address: no mailbox either
                digests.add(tombstones.mailbox_digest(email_parts(value, config)[1]) or "")
        elif kind == "phone":
            try:
                e164 = phone_key(value, config)
            except ValueError:
                continue  # not a number: it names nobody
            digests.add(tombstones.phone_digest(e164) or "")
    return digests - {""}


async def _claim(connection: AsyncConnection, event: InboundEvent) -> int | None:
    """Insert the event row, or None when (source, event_id) is already stored. On
    Postgres a concurrent claim of the same id waits for the first to commit."""
    dialect_insert = postgres_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = (
        dialect_insert(Event)
        .values(
            source=event.source,
            event_id=event.event_id,
            type=event.type,
            occurred_at=event.occurred_at,
            properties=event.properties,
            received_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        .returning(Event.id)
    )
    claimed: int | None = await connection.scalar(statement)
    return claimed


async def _receipt(connection: AsyncConnection, event: InboundEvent, claimed: int) -> bool:
    """Record the digest of the event's signed body; False when it was recorded before
    (the same body under another id: a replay). True for events without one."""
    if event.receipt is None:
        return True
    dialect_insert = postgres_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = (
        dialect_insert(WebhookReceipt)
        .values(source=event.source, digest=event.receipt, event_id=claimed)
        .on_conflict_do_nothing(index_elements=["source", "digest"])
        .returning(WebhookReceipt.event_id)
    )
    return await connection.scalar(statement) is not None


async def _owner_email(connection: AsyncConnection, record: PreparedRecord) -> str | None:
    """The email the record's current owner has now: its cached entry must go too."""
    email: str | None = await connection.scalar(
        select(Customer.email)
        .join(Identity, Identity.customer_id == Customer.id)
        .where(Identity.source == record.source, Identity.external_id == record.external_id)
    )
    return email
