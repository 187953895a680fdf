"""A batch of stream events stored in one transaction, as the Segment webhook stores one.

The same rows as the webhook path (``events``, ``event_subjects``; the same unique
(source, event_id), so a messageId already stored by either path is a duplicate), the
same tombstone check under the same key locks, the same identity linking, but for
hundreds of events per round trip: one lock call, one tombstone lookup, one identity
lookup, one multi-row INSERT ... ON CONFLICT DO NOTHING for the events.

What a batch adds over one webhook:
- anonymous stitching: an identify carrying both ``userId`` and ``anonymousId`` links
  the device's earlier unlinked events to the customer, and a later anonymous event of
  a device already stitched lands on that customer at once;
- consent: an event of a customer with a stored "no" to ``analytics`` is not stored
  (acknowledged and counted, like an erased person's).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import ValidationError
from sqlalchemy import Table, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from gateway.db.access_models import EventSubject
from gateway.db.models import Consent, Customer, Event, Identity
from gateway.db.retries import DEFAULT_RETRY, RetryPolicy, retry_transaction
from gateway.identity import DEFAULT_CONFIG, IdentityConfig, PreparedRecord, RecordError, Resolver
from gateway.identity import prepare as prepare_record
from gateway.identity.bulk import insert_tuples
from gateway.identity.lookup import matching
from gateway.identity.resolution import lock_keys, record_keys
from gateway.identity.source_ids import DEFAULT_SOURCE_IDS, SourceIds
from gateway.ingest.webhook_payloads import InboundEvent, PayloadError, SegmentEvent
from gateway.ingest.webhook_payloads import segment_event as to_inbound
from gateway.ingest.webhooks import subject_digests
from gateway.privacy.consent import Purpose
from gateway.privacy.erasure import Tombstones
from gateway.privacy.erasure_scope import subject_key

SOURCE = "segment"
# Rows per INSERT statement: 6 parameters each stays far below the drivers' limits.
_ROWS_PER_STATEMENT = 1000
_NAMED_CACHE = 100_000  # users whose plain events' records are kept prepared

_SUBJECTS: Table = EventSubject.__table__  # type: ignore[assignment]

Outcome = Literal["stored", "duplicate", "erased", "no_consent"]


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One validated message, ready to store: its event, identity record and digests."""

    event: InboundEvent
    record: PreparedRecord | None
    subjects: frozenset[str]  # event_subjects digests (anonymous id, contact points)
    anonymous: str | None  # the digest of its anonymousId, for stitching
    digests: frozenset[str]  # what a tombstone of its person would match: record and subjects
    keys: tuple[str, ...]  # the lock keys of those identifiers


@dataclass(slots=True)
class CustomerTouch:
    """What one batch did to one customer: the after-commit work, coalesced."""

    fields: set[str] = field(default_factory=set)
    event_type: str = ""
    event_id: str = ""
    occurred_at: datetime = field(default_factory=lambda: datetime.min.replace(tzinfo=UTC))
    profile_changed: bool = False  # an identify: the cached profile goes too
    old_emails: set[str] = field(default_factory=set)
    folded: set[uuid.UUID] = field(default_factory=set)


@dataclass(slots=True)
class BatchResult:
    outcomes: list[Outcome]  # per event, in the order given
    customers: dict[uuid.UUID, CustomerTouch]
    stitched: int = 0  # earlier anonymous events linked by an identify


class EventBatches:
    """Parses stream messages and stores batches of them; no transport, no HTTP."""

    def __init__(
        self,
        engine: AsyncEngine,
        tombstones: Tombstones,
        config: IdentityConfig = DEFAULT_CONFIG,
        source_ids: SourceIds = DEFAULT_SOURCE_IDS,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self._engine = engine
        self._tombstones = tombstones
        self._config = config
        self._source_ids = source_ids
        self._retry = retry
        # A track or page call names its user by id only: its prepared record, digests
        # and lock keys are the same for each of that user's events (hashing and
        # normalising them again per event was a third of the parse).
        self._named: dict[str, tuple[PreparedRecord, frozenset[str], tuple[str, ...]]] = {}

    def parse(self, payload: bytes) -> StreamEvent:
        """A Segment Track, Identify or Page message; ``PayloadError`` names what is wrong
        (never the value: it may be personal data)."""
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise PayloadError("the message is not valid JSON", status=400) from None
        try:
            message = SegmentEvent.model_validate(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "message"
            raise PayloadError(f"{where}: {error['msg']}", where) from None
        event = to_inbound(message)
        subjects = frozenset(subject_digests(event, self._tombstones, self._config))
        anonymous = (
            self._tombstones.anonymous_digest(SOURCE, message.anonymousId)
            if message.anonymousId
            else None
        )
        record, digests, keys = self._record(event, message)
        return StreamEvent(
            event,
            record,
            subjects,
            anonymous,
            digests | subjects,
            (*keys, *map(subject_key, sorted(subjects))),
        )

    def _record(
        self, event: InboundEvent, message: SegmentEvent
    ) -> tuple[PreparedRecord | None, frozenset[str], tuple[str, ...]]:
        if event.record is None:
            return None, frozenset(), ()
        plain = message.type != "identify" and not message.traits and not _context_traits(message)
        if plain and (known := self._named.get(str(message.userId))) is not None:
            return known
        try:
            record = prepare_record(event.record, SOURCE, self._config, self._source_ids)
        except RecordError as exc:
            raise PayloadError(f"{exc.field}: {str(exc).split(': ', 1)[-1]}", exc.field) from None
        prepared = (
            record,
            frozenset(self._tombstones.of_record(record)),
            tuple(record_keys(record)),
        )
        if plain:
            if len(self._named) >= _NAMED_CACHE:
                self._named.clear()
            self._named[str(message.userId)] = prepared
        return prepared

    async def store(self, batch: Sequence[StreamEvent]) -> BatchResult:
        """All of the batch in one transaction (run again from the start after a
        deadlock or serialization failure); what it raises was not stored."""
        return await retry_transaction(lambda: self._store(batch), "stream_ingest", self._retry)

    async def _store(self, batch: Sequence[StreamEvent]) -> BatchResult:
        outcomes: list[Outcome | None] = [None] * len(batch)
        result = BatchResult([], {})
        first: dict[str, int] = {}
        for position, item in enumerate(batch):
            # The same messageId twice in one batch (a producer's retry): one row.
            if item.event.event_id in first:
                outcomes[position] = "duplicate"
            else:
                first[item.event.event_id] = position
        live = sorted(first.values())
        async with self._engine.connect() as connection, connection.begin():
            # Every key of the batch at once, in ascending order (no lock cycles with a
            # webhook, an erasure or another consumer): a tombstone committed before is
            # seen below, an erasure starting now waits for this commit and removes it.
            await lock_keys(connection, (k for i in live for k in batch[i].keys))
            digests = {i: batch[i].digests for i in live}
            blocked = await self._tombstones.blocked(connection, set().union(*digests.values()))
            if blocked:
                for i in live:
                    if digests[i] & blocked:
                        outcomes[i] = "erased"
                live = [i for i in live if outcomes[i] is None]
            linked = await self._owners(connection, [batch[i] for i in live], result)
            owners = {live[position]: owner for position, owner in linked.items()}
            refused = await _refusing(connection, set(owners.values()))
            for i in live:
                owner = owners.get(i)
                if owner is not None and owner in refused:
                    outcomes[i] = "no_consent"
            live = [i for i in live if outcomes[i] is None]
            stored = await _insert_events(connection, [(batch[i], owners.get(i)) for i in live])
            for i in live:
                outcomes[i] = "stored" if batch[i].event.event_id in stored else "duplicate"
            subject_rows = [
                (stored[batch[i].event.event_id], digest)
                for i in live
                if outcomes[i] == "stored"
                for digest in sorted(batch[i].subjects)
            ]
            # New rows of new events: nothing to conflict with, so COPY on Postgres.
            await insert_tuples(connection, _SUBJECTS, ("event_id", "digest"), subject_rows)
            result.stitched = await self._stitch(connection, batch, live, owners, result)
        for i in live:
            owner = owners.get(i)
            if outcomes[i] == "stored" and owner is not None:
                _touch(result, owner, batch[i])
        result.outcomes = [o or "duplicate" for o in outcomes]
        return result

    async def _owners(
        self, connection: AsyncConnection, items: list[StreamEvent], result: BatchResult
    ) -> dict[int, uuid.UUID]:
        """The customer of each event that has one, by its position in ``items``."""
        by_item: dict[int, uuid.UUID] = {}
        known = await _identities(
            connection, {item.record.external_id for item in items if item.record}
        )
        to_link: list[tuple[int, PreparedRecord]] = []
        for position, item in enumerate(items):
            record = item.record
            if record is None:
                continue
            owner = known.get(record.external_id)
            # A track or page of a known user only names its customer; an identify
            # brings traits to link and survive, and a new user id needs the linker.
            if owner is not None and item.event.type != "identify":
                by_item[position] = owner
            else:
                to_link.append((position, record))
        if to_link:
            sessions = async_sessionmaker(
                bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
            )
            resolver = Resolver(sessions, self._config, retry=None)  # ``store`` retries
            emails = await _emails(connection, {r.external_id for _, r in to_link})
            decisions = await resolver.link([record for _, record in to_link])
            for (position, record), decision in zip(to_link, decisions, strict=True):
                by_item[position] = decision.customer_id
                touch = result.customers.setdefault(decision.customer_id, CustomerTouch())
                touch.profile_changed = True
                touch.folded.update(decision.merged)
                if (old := emails.get(record.external_id)) is not None:
                    touch.old_emails.add(old)
        anonymous = {item.anonymous for item in items if item.anonymous and not item.record}
        stitched = await _stitched(connection, anonymous)
        for position, item in enumerate(items):
            if item.record is None and item.anonymous in stitched:
                by_item[position] = stitched[item.anonymous]
        return by_item

    async def _stitch(
        self,
        connection: AsyncConnection,
        batch: Sequence[StreamEvent],
        live: list[int],
        owners: dict[int, uuid.UUID],
        result: BatchResult,
    ) -> int:
        """Link the unlinked events of each anonymous id an identify named to its
        customer (``owners`` is keyed by position in ``batch``)."""
        pairs: dict[str, uuid.UUID] = {}
        for i in live:
            item = batch[i]
            owner = owners.get(i)
            if item.event.type == "identify" and item.anonymous and owner is not None:
                pairs[item.anonymous] = owner
        if not pairs:
            return 0
        linked = 0
        for digest, customer_id in sorted(pairs.items()):
            unlinked = (
                select(EventSubject.event_id).where(EventSubject.digest == digest).scalar_subquery()
            )
            done = await connection.execute(
                update(Event)
                .where(Event.customer_id.is_(None), Event.id.in_(unlinked))
                .values(customer_id=customer_id)
            )
            count = int(getattr(done, "rowcount", 0) or 0)
            if count:
                linked += count
                touch = result.customers.setdefault(customer_id, CustomerTouch())
                touch.fields.update(("recent_events", "engagement"))
        return linked


def _touch(result: BatchResult, customer_id: uuid.UUID, item: StreamEvent) -> None:
    touch = result.customers.setdefault(customer_id, CustomerTouch())
    event = item.event
    touch.fields.update(event.changed or ("recent_events", "engagement"))
    if event.occurred_at >= touch.occurred_at:
        touch.event_type, touch.event_id, touch.occurred_at = (
            event.type,
            event.event_id,
            event.occurred_at,
        )


async def _identities(connection: AsyncConnection, external_ids: set[str]) -> dict[str, uuid.UUID]:
    found: dict[str, uuid.UUID] = {}
    for clause in matching(connection, Identity.external_id, external_ids):
        rows = await connection.execute(
            select(Identity.external_id, Identity.customer_id).where(
                Identity.source == SOURCE, clause
            )
        )
        found.update(dict(rows.all()))
    return found


async def _emails(connection: AsyncConnection, external_ids: set[str]) -> dict[str, str]:
    """The e-mail each record's current owner has now: its cached entry must go too."""
    found: dict[str, str] = {}
    for clause in matching(connection, Identity.external_id, external_ids):
        rows = await connection.execute(
            select(Identity.external_id, Customer.email)
            .join(Customer, Customer.id == Identity.customer_id)
            .where(Identity.source == SOURCE, clause)
        )
        found.update({external_id: email for external_id, email in rows if email})
    return found


async def _stitched(connection: AsyncConnection, digests: set[str]) -> dict[str, uuid.UUID]:
    """Anonymous ids already tied to a customer (an identify stitched them, or an
    identified event carried them): their later anonymous events go to that customer."""
    found: dict[str, uuid.UUID] = {}
    for clause in matching(connection, EventSubject.digest, digests):
        rows = await connection.execute(
            select(EventSubject.digest, Event.customer_id)
            .join(Event, Event.id == EventSubject.event_id)
            .where(clause, Event.customer_id.is_not(None))
            .order_by(Event.id)
        )
        # Ordered by id: the latest link wins.
        found.update((digest, owner) for digest, owner in rows if owner is not None)
    return found


async def _refusing(connection: AsyncConnection, customers: set[uuid.UUID]) -> set[uuid.UUID]:
    """The customers with a stored "no" to analytics: their events are not kept."""
    refused: set[uuid.UUID] = set()
    for clause in matching(connection, Consent.customer_id, customers):
        refused.update(
            await connection.scalars(
                select(Consent.customer_id).where(
                    clause, Consent.purpose == Purpose.ANALYTICS.value, Consent.granted.is_(False)
                )
            )
        )
    return refused


async def _insert_events(
    connection: AsyncConnection, items: list[tuple[StreamEvent, uuid.UUID | None]]
) -> dict[str, int]:
    """Insert the rows; the stored ones' event ids to row ids (an id already stored,
    by this path or the webhook's, is left alone: a duplicate)."""
    if not items:
        return {}
    now = datetime.now(UTC)
    if connection.dialect.name == "postgresql":
        # One constant statement over arrays: a prepared plan, and no SQL compiled per
        # batch (a 1,000-row VALUES list took SQLAlchemy 0.3 s to compile).
        rows = await connection.execute(
            _UNNEST_INSERT,
            {
                "event_ids": [item.event.event_id for item, _ in items],
                "types": [item.event.type for item, _ in items],
                "occurred": [item.event.occurred_at for item, _ in items],
                "properties": [orjson.dumps(item.event.properties).decode() for item, _ in items],
                "customers": [owner for _, owner in items],
                "now": now,
            },
        )
        return dict(rows.all())
    stored: dict[str, int] = {}
    for start in range(0, len(items), _ROWS_PER_STATEMENT):
        values: list[dict[str, Any]] = [
            {
                "source": SOURCE,
                "event_id": item.event.event_id,
                "type": item.event.type,
                "occurred_at": item.event.occurred_at,
                "properties": item.event.properties,
                "received_at": now,
                "customer_id": owner,
            }
            for item, owner in items[start : start + _ROWS_PER_STATEMENT]
        ]
        statement = (
            sqlite_insert(Event)
            .values(values)
            .on_conflict_do_nothing(index_elements=["source", "event_id"])
            .returning(Event.event_id, Event.id)
        )
        stored.update(dict((await connection.execute(statement)).all()))
    return stored


_UNNEST_INSERT = text(
    """
    INSERT INTO events (source, event_id, type, occurred_at, properties, received_at, customer_id)
    SELECT 'segment', e.event_id, e.type, e.occurred_at, CAST(e.properties AS json), :now,
           e.customer_id
    FROM unnest(
        CAST(:event_ids AS varchar[]), CAST(:types AS varchar[]),
        CAST(:occurred AS timestamptz[]), CAST(:properties AS text[]),
        CAST(:customers AS uuid[])
    ) AS e(event_id, type, occurred_at, properties, customer_id)
    ON CONFLICT (source, event_id) DO NOTHING
    RETURNING event_id, id
    """
)


def _context_traits(message: SegmentEvent) -> bool:
    return bool(message.context and message.context.traits)
