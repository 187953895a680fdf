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
  (acknowledged and counted, like an erased person's), by the rule the webhook asks
  too (``consent.refusing_analytics``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import orjson
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from gateway.db.retries import DEFAULT_RETRY, RetryPolicy, retry_transaction
from gateway.identity import DEFAULT_CONFIG, IdentityConfig, PreparedRecord, RecordError, Resolver
from gateway.identity import prepare as prepare_record
from gateway.identity.linkage.resolution import lock_keys, record_keys
from gateway.identity.source_ids import DEFAULT_SOURCE_IDS, SourceIds
from gateway.ingest.json_text import PayloadError, refusal
from gateway.ingest.streams.event_rows import (
    SOURCE,
    Known,
    emails,
    identities,
    insert_events,
    known,
    stitch_devices,
    stitched,
)
from gateway.ingest.webhook_payloads import InboundEvent, SegmentEvent
from gateway.ingest.webhook_payloads import segment_event as to_inbound
from gateway.ingest.webhooks import subject_digests
from gateway.privacy.consent import refusing_analytics
from gateway.privacy.erasure_scope import subject_key
from gateway.privacy.suppressions import Suppressions
from gateway.privacy.tombstones import Tombstones

_NAMED_CACHE = 100_000  # users whose plain events' records are kept prepared
# The model's validator called directly (``model_validate`` adds a call and its
# keyword handling per message).
_VALIDATE = SegmentEvent.__pydantic_validator__.validate_python


_LONG_AGO = datetime.min.replace(tzinfo=UTC)
_BEHAVIOUR = ("recent_events", "engagement")
Outcome = Literal["stored", "duplicate", "erased", "no_consent"]


_Derived = tuple[
    PreparedRecord | None, tuple[str, ...], str | None, frozenset[str], tuple[str, ...]
]


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and one
# is built per message (thousands a second).
@dataclass(slots=True)
class StreamEvent:
    """One validated message, ready to store: its event, identity record and digests."""

    event: InboundEvent
    record: PreparedRecord | None
    subjects: tuple[str, ...]  # event_subjects digests (anonymous id, contact points), sorted
    anonymous: str | None  # the digest of its anonymousId, for stitching
    digests: frozenset[str]  # what a tombstone of its person would match: record and subjects
    keys: tuple[str, ...]  # the lock keys of those identifiers


@dataclass(slots=True)
class CustomerTouch:
    """What one batch did to one customer: the after-commit work, coalesced."""

    fields: set[str] = field(default_factory=set)
    event_type: str = ""
    event_id: str = ""
    occurred_at: datetime = _LONG_AGO
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
        # A track or page call names its user by id only, and its device: what is
        # derived from them (prepared record, digests, lock keys) is the same for each of
        # that user's events on that device (hashing and normalising them again per
        # event was a third of the parse).
        self._plain: dict[tuple[str | None, object], _Derived] = {}

    def parse(self, payload: bytes) -> StreamEvent:
        """A Segment Track, Identify or Page message; ``PayloadError`` names what is wrong
        (never the value: it may be personal data)."""
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            # orjson refuses an unpaired surrogate escape ("\ud800") as it refuses
            # text that is no JSON: the webhook's reason names the field (was "not
            # valid JSON" here while the webhook answered a 422 naming it).
            reason, where, status = refusal(payload)
            if status == 400:
                raise PayloadError("the message is not valid JSON", status=400) from None
            raise PayloadError(reason, where, status) from None
        try:
            message: SegmentEvent = _VALIDATE(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "message"
            raise PayloadError(f"{where}: {error['msg']}", where) from None
        if message.type == "identify" or message.traits or _context_traits(message):
            event = to_inbound(message)
            return StreamEvent(event, *self._derived(event, message))
        key: tuple[str | None, object]
        if message.userId:
            # A user's track or page call: what is derived depends on the user id and
            # the device only, and the event needs no record of its own.
            key = (message.userId, message.anonymousId)
            derived = self._plain.get(key)
            if derived is not None:
                return StreamEvent(to_inbound(message, with_record=False), *derived)
            event = to_inbound(message)
        else:
            event = to_inbound(message)
            key = (None, event.subjects)  # the device and any contact points it carries
            derived = self._plain.get(key)
            if derived is not None:
                return StreamEvent(event, *derived)
        derived = self._derived(event, message)
        if len(self._plain) >= _NAMED_CACHE:
            self._plain.clear()
        self._plain[key] = derived
        return StreamEvent(event, *derived)

    def _derived(self, event: InboundEvent, message: SegmentEvent) -> _Derived:
        """A StreamEvent's fields after its event: record, subjects, anonymous digest,
        every digest a tombstone would match, and the lock keys."""
        subjects = frozenset(subject_digests(event, self._tombstones, self._config))
        anonymous = (
            self._tombstones.anonymous_digest(SOURCE, message.anonymousId)
            if message.anonymousId
            else None
        )
        record: PreparedRecord | None = None
        digests: frozenset[str] = frozenset()
        keys: tuple[str, ...] = ()
        if event.record is not None:
            try:
                record = prepare_record(event.record, SOURCE, self._config, self._source_ids)
            except RecordError as exc:
                problem = str(exc).split(": ", 1)[-1]
                raise PayloadError(f"{exc.field}: {problem}", exc.field) from None
            digests = frozenset(self._tombstones.of_record(record))
            keys = tuple(record_keys(record))
        return (
            record,
            tuple(sorted(subjects)),
            anonymous,
            digests | subjects,
            (*keys, *map(subject_key, sorted(subjects))),
        )

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
            postgres = connection.dialect.name == "postgresql"
            # Every key of the batch at once, in ascending order (no lock cycles with a
            # webhook, an erasure or another consumer): a tombstone committed before is
            # seen below, an erasure starting now waits for this commit and removes it.
            # Lookups by arrays of a thousand ids: a generic plan costed while the tables
            # were small scans them (35 ms a batch for 1,000 identities, growing with the
            # table); a plan made for each batch's own arrays uses the indexes.
            # A user's plain calls on one device share their derived tuples (parse's
            # cache): each distinct one is looked at once, not once per event.
            keys = {batch[i].keys for i in live}
            await lock_keys(connection, (k for each in keys for k in each), custom_plans=postgres)
            every = set().union(*{batch[i].digests for i in live})
            found: Known | None = None
            if postgres:
                users = {r.external_id for i in live if (r := batch[i].record) is not None}
                found = await known(connection, every, users)
                blocked = found.blocked
            else:
                blocked = await self._tombstones.blocked(connection, every)
            if blocked:
                for i in live:
                    if batch[i].digests & blocked:
                        outcomes[i] = "erased"
                live = [i for i in live if outcomes[i] is None]
            items = [batch[i] for i in live]
            linked = await self._owners(connection, items, result, found)
            owners = {live[position]: owner for position, owner in linked.items()}
            # Consent as the lookup found it for known users; asked for the others
            # (customers the linker chose, devices stitched earlier).
            asked = set(found.owners.values()) if found else set()
            refused = (found.refused if found else set()) | await refusing_analytics(
                connection, set(owners.values()) - asked
            )
            for i in live:
                owner = owners.get(i)
                if owner is not None and owner in refused:
                    outcomes[i] = "no_consent"
            live = [i for i in live if outcomes[i] is None]
            duplicates = await insert_events(connection, [(batch[i], owners.get(i)) for i in live])
            for i in live:
                outcomes[i] = "duplicate" if batch[i].event.event_id in duplicates else "stored"
            result.stitched = await self._stitch(connection, batch, live, owners, result)
        customers = result.customers
        for i in live:
            owner = owners.get(i)
            if owner is None or outcomes[i] != "stored":
                continue
            # Inline (once per event): the customer's after-commit work, coalesced.
            touch = customers.get(owner)
            if touch is None:
                touch = customers[owner] = CustomerTouch()
            event = batch[i].event
            touch.fields.update(event.changed or _BEHAVIOUR)
            if event.occurred_at >= touch.occurred_at:
                touch.event_type, touch.event_id, touch.occurred_at = (
                    event.type,
                    event.event_id,
                    event.occurred_at,
                )
        result.outcomes = [o or "duplicate" for o in outcomes]
        return result

    async def _owners(
        self,
        connection: AsyncConnection,
        items: list[StreamEvent],
        result: BatchResult,
        found: Known | None,
    ) -> dict[int, uuid.UUID]:
        """The customer of each event that has one, by its position in ``items``
        (``found``: the batch's identities, looked up already)."""
        by_item: dict[int, uuid.UUID] = {}
        if found is not None:
            known = found.owners
        else:
            known = await identities(
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
            resolver = Resolver(  # ``store`` retries
                sessions,
                self._config,
                retry=None,
                suppressions=Suppressions(self._tombstones, self._config),
            )
            owned = await emails(connection, {r.external_id for _, r in to_link})
            decisions = await resolver.link([record for _, record in to_link])
            for (position, record), decision in zip(to_link, decisions, strict=True):
                by_item[position] = decision.customer_id
                touch = result.customers.setdefault(decision.customer_id, CustomerTouch())
                touch.profile_changed = True
                touch.folded.update(decision.merged)
                if (old := owned.get(record.external_id)) is not None:
                    touch.old_emails.add(old)
        anonymous = {item.anonymous for item in items if item.anonymous and not item.record}
        devices = await stitched(connection, anonymous)
        for position, item in enumerate(items):
            if item.record is None and item.anonymous in devices:
                by_item[position] = devices[item.anonymous]
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
        linked = await stitch_devices(connection, pairs)
        for customer_id in linked:
            touch = result.customers.setdefault(customer_id, CustomerTouch())
            touch.fields.update(("recent_events", "engagement"))
        return sum(linked.values())


def _context_traits(message: SegmentEvent) -> bool:
    return bool(message.context and message.context.traits)
