"""Storing a whole ESP batch in one transaction: SendGrid posts up to thousands of events
a request, and one transaction each (the other webhooks' path) managed 30 events/s.

The same steps and guarantees as ``WebhookIngest._store``, done for the batch at once:
the identifiers' key locks (ascending, as every writer takes them), the tombstones
(an erased person's events are not stored), the recipients looked up by address (an
unknown address stores nothing, and no profile is created), each event claimed by its
unique (source, event id) (a replay, or a copy later in the same batch, is a
duplicate), its subjects kept for an erasure to find, the consequences applied
(gateway/ingest/engagement.py), and clicks on tracked recommendation links attributed
(gateway/experiments/attribution.py). The transaction commits all of it or nothing: a
failure answers "not stored" for the batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, cast

import orjson
from sqlalchemy import Table, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.access_models import EventSubject
from gateway.db.bulk import custom_plans, insert_tuples, is_postgres, matching
from gateway.db.identity_models import IdentityRecord
from gateway.db.models import Attribute, Customer, Event, Identity
from gateway.experiments.attribution import ClickedLink, record_clicks, send_of
from gateway.experiments.tracking import Tracker
from gateway.identity.config import DEFAULT_CONFIG, IdentityConfig
from gateway.identity.linkage.resolution import customer_keys, lock_keys
from gateway.identity.values import email_parts
from gateway.ingest.engagement import apply_consequences, stated_at, withdrawal_source
from gateway.ingest.webhook_payloads import InboundEvent
from gateway.privacy import suppressions
from gateway.privacy.erasure_scope import subject_key
from gateway.privacy.tombstones import Tombstones

_SUBJECTS = cast(Table, EventSubject.__table__)
BatchStatus = Literal["processed", "duplicate", "erased", "ignored"]  # as ``Ingested``'s


@dataclass(slots=True)
class StoredBatch:
    """Each event's status, in order, and what each customer's events changed."""

    statuses: list[tuple[BatchStatus, uuid.UUID | None]] = field(default_factory=list)
    # customer -> (the batch's last stored event for them that changed a field, every field
    # their events touched); customers whose events changed none are absent
    changed: dict[uuid.UUID, tuple[InboundEvent, set[str]]] = field(default_factory=dict)

    def touched(self, customer: uuid.UUID, event: InboundEvent, fields: Iterable[str]) -> None:
        """``event`` changed ``fields`` of ``customer``'s: the latest such event, and the
        fields added to those the batch changed before."""
        before = self.changed.get(customer, (event, set()))[1]
        self.changed[customer] = (event, before.union(fields))


async def store_batch(
    connection: AsyncConnection,
    events: Sequence[InboundEvent],
    subjects: Sequence[set[str]],
    tombstones: Tombstones,
    tracker: Tracker | None = None,
    config: IdentityConfig = DEFAULT_CONFIG,
) -> StoredBatch:
    """Store ``events`` (each with its subject digests) on ``connection``'s transaction;
    clicks on links ``tracker`` signed are attributed to their lists; every withdrawal
    and hard bounce is kept as a suppression of its mailbox (gateway/privacy/
    suppressions.py), and given to every customer whose address now is that mailbox."""
    every = set().union(*subjects) if subjects else set()
    # Shared: an ESP batch creates and links no one, so only an erasure (exclusive) must
    # wait for it; two batches (which held ~60 % of the stripes each) no longer queue.
    # A withdrawal's or a hard bounce's address too, as the linker keys it: a customer
    # being created with it either commits before the lookup below or finds the
    # suppression kept here.
    await lock_keys(
        connection, [*map(subject_key, every), *_kept_keys(events, config)], shared=True
    )
    # The lookups by a thousand addresses each, planned for them (gateway/db/bulk.py).
    async with custom_plans(connection):
        blocked = await tombstones.blocked(connection, every) if every else set()
        addresses = {e.recipient for e in events if e.recipient}
        recipients = await _recipients(connection, addresses, config)
        result = StoredBatch()
    wanted: dict[str, int] = {}  # event id -> position of its first copy in the batch
    # What is said of mailboxes: (digest, kind) -> the newest (source, time). Whoever
    # takes one on later gets it (a customer who leaves a bounced address for another is
    # mailable there), and so does every customer holding it now under another spelling.
    kept: dict[tuple[str, suppressions.Kind], tuple[str, datetime]] = {}
    now = datetime.now(UTC)

    def note(event: InboundEvent) -> None:
        if event.consequence is None or not event.recipient:
            return
        mailbox = suppressions.mailbox(event.recipient, config)
        key = (tombstones.digest("email", mailbox), event.consequence)
        source = event.source
        if event.consequence == "withdraw":
            source = withdrawal_source(event)
        stated = (source, stated_at(event, now))
        kept[key] = max(kept.get(key, stated), stated, key=lambda s: s[1])

    # Every mailbox a withdrawal or hard bounce is for, with its events and the customers
    # they name: the other customers holding it get the statement too (``reach``).
    said: dict[str, list[InboundEvent]] = {}
    named: dict[str, set[uuid.UUID]] = {}

    def mark(event: InboundEvent, customer: uuid.UUID | None) -> None:
        if event.consequence is None or not event.recipient:
            return
        note(event)
        mailbox = suppressions.mailbox(event.recipient, config)
        said.setdefault(mailbox, []).append(event)
        named.setdefault(mailbox, set()).update({customer} if customer else ())

    # One id is one event: a copy naming nobody of an id stored before, or named (or met)
    # anywhere in this batch, is a duplicate and keeps no statement.
    taken = await _stored_ids(connection, events, recipients)
    taken |= {e.event_id for e in events if recipients.get(e.recipient or "")}
    for position, (event, digests) in enumerate(zip(events, subjects, strict=True)):
        customer = recipients.get(event.recipient or "")
        if digests & blocked:
            result.statuses.append(("erased", None))
        elif customer is None and event.event_id in taken:
            result.statuses.append(("duplicate", None))
        elif customer is None:
            taken.add(event.event_id)
            mark(event, None)
            result.statuses.append(("ignored", None))
        elif event.event_id in wanted:
            result.statuses.append(("duplicate", None))
        else:
            wanted[event.event_id] = position
            result.statuses.append(("duplicate", customer))  # until its claim succeeds
    fresh = [(events[p], result.statuses[p][1]) for p in wanted.values()]
    claimed = await _claim(connection, fresh)
    for event_id, position in wanted.items():
        if event_id not in claimed:  # stored before: a duplicate, named by nobody
            result.statuses[position] = ("duplicate", None)
    subject_rows: list[tuple[int, str]] = []
    consequences: list[tuple[uuid.UUID, InboundEvent]] = []
    clicked: list[ClickedLink] = []
    for event_id, row_id in sorted(claimed.items()):
        position = wanted[event_id]
        event, customer = events[position], result.statuses[position][1]
        assert customer is not None
        result.statuses[position] = ("processed", customer)
        subject_rows += [(row_id, digest) for digest in sorted(subjects[position])]
        if event.consequence is not None:
            consequences.append((customer, event))
            mark(event, customer)
        url = event.properties.get("url") if event.type == "email:click" else None
        if isinstance(url, str):
            send = send_of(event.properties)
            clicked.append(ClickedLink(row_id, customer, url, event.occurred_at, send))
        if event.changed:  # a delivery, a deferral…: stored, and no field of theirs changed
            result.touched(customer, event, event.changed)
    # COPY on Postgres: a batch's thousand rows, no conflict possible (fresh events).
    await insert_tuples(connection, _SUBJECTS, ("event_id", "digest"), subject_rows)
    # The mailboxes' rows first, in one order, before any customer's consent: two
    # batches withdrawing one mailbox then queue there, not on each other's customers
    # (named by one batch, reached as holders by the other: a deadlock).
    await suppressions.keep(connection, kept)
    await apply_consequences(connection, consequences, now, config)
    reached = await suppressions.Suppressions(tombstones, config).reach(connection, named)
    for customer, mailbox in reached.items():
        events_of = said[mailbox]
        result.touched(customer, events_of[-1], (f for e in events_of for f in e.changed))
    if tracker is not None:
        await record_clicks(connection, clicked, tracker)
    return result


async def _stored_ids(
    connection: AsyncConnection,
    events: Sequence[InboundEvent],
    recipients: Mapping[str, uuid.UUID],
) -> set[str]:
    """The ids, among events that would keep a statement for an address nobody has,
    already stored (for someone else): a replay under a stored id must not keep one."""
    ids: dict[str, set[str]] = {}  # source -> event ids
    for e in events:
        if e.consequence is not None and (e.recipient or "") not in recipients:
            ids.setdefault(e.source, set()).add(e.event_id)
    found: set[str] = set()
    for source, wanted in ids.items():
        for clause in matching(connection, Event.event_id, wanted):
            rows = await connection.scalars(
                select(Event.event_id).where(Event.source == source, clause)
            )
            found.update(str(event_id) for event_id in rows)
    return found


def _kept_keys(events: Sequence[InboundEvent], config: IdentityConfig) -> list[str]:
    keys: list[str] = []
    for event in events:
        if event.consequence is not None and event.recipient:
            try:
                _, email_key = email_parts(event.recipient, config)
            except ValueError:
                continue
            if email_key:
                keys.extend(customer_keys((), [email_key], ()))
    return keys


async def _recipients(
    connection: AsyncConnection, emails: set[str], config: IdentityConfig
) -> dict[str, uuid.UUID]:
    """The customer each address names: the one whose address it is, else the one
    customer it was ever observed for (an address merged away or replaced: a mail sent
    to it before, or by a system that still holds it, is still that person's, and their
    unsubscribe must count), else the one customer whose source records have its
    matching key (``jane.doe+news@gmail.com`` is ``janedoe@gmail.com``'s mailbox, as
    the linker keys it: an unsubscribe from it is that person's). An address observed
    for several customers, or keyed by several, names none."""
    found: dict[str, uuid.UUID] = {}
    for clause in matching(connection, Customer.email, emails):
        rows = await connection.execute(select(Customer.email, Customer.id).where(clause))
        found.update({email: customer for email, customer in rows if email is not None})
    rest = emails - found.keys()
    if not rest:
        return found
    seen: dict[str, set[uuid.UUID]] = {}
    for clause in matching(connection, Attribute.value, rest):
        rows = await connection.execute(
            select(Attribute.value, Attribute.customer_id)
            .where(Attribute.name == "email", clause)
            .distinct()
        )
        for value, customer in rows:
            if value is not None:
                seen.setdefault(value, set()).add(customer)
    found.update({email: next(iter(ids)) for email, ids in seen.items() if len(ids) == 1})
    rest -= seen.keys()  # observed for several: named by nobody, not by its key either
    if rest:
        found.update(await _keyed(connection, rest, config))
    return found


async def _keyed(
    connection: AsyncConnection, emails: set[str], config: IdentityConfig
) -> dict[str, uuid.UUID]:
    """The one customer whose identities' latest records, or whose own address, have
    each address's matching key (a provider's dots and plus tags folded,
    ``email_parts``)."""
    keys: dict[str, set[str]] = {}  # matching key -> the addresses folding to it
    for email in emails:
        try:
            _, key = email_parts(email, config)
        except ValueError:  # taken by the fast path, refused by the full one: nobody's
            continue
        if key:
            keys.setdefault(key, set()).add(email)
    owners: dict[str, set[uuid.UUID]] = {}
    for clause in matching(connection, IdentityRecord.email_key, list(keys)):
        rows = await connection.execute(
            select(IdentityRecord.email_key, Identity.customer_id)
            .join(Identity, Identity.id == IdentityRecord.identity_id)
            .where(clause)
            .distinct()
        )
        for key, customer in rows:
            if key is not None:
                owners.setdefault(key, set()).add(customer)
    # A customer with no source records (created through the API by address alone) is
    # found by its address: the mailbox written plainly (the key itself) or another way.
    for key, customer, _ in await suppressions.holders(connection, list(keys)):
        owners.setdefault(key, set()).add(customer)
    return {
        email: next(iter(ids))
        for key, ids in owners.items()
        if len(ids) == 1
        for email in keys[key]
    }


async def _claim(
    connection: AsyncConnection, rows: list[tuple[InboundEvent, uuid.UUID | None]]
) -> dict[str, int]:
    """Insert the events not stored yet; their ids by event id. Inserted in event-id
    order, so two batches sharing events wait on each other in one order only."""
    received = datetime.now(UTC)
    ordered = sorted(rows, key=lambda row: row[0].event_id)
    if not ordered:
        return {}
    if is_postgres(connection):
        return await _claim_postgres(connection, ordered, received)
    values = [
        {
            "source": event.source,
            "event_id": event.event_id,
            "type": event.type,
            "occurred_at": event.occurred_at,
            "properties": event.properties,
            "received_at": received,
            "customer_id": customer,
        }
        for event, customer in ordered
    ]
    # One statement given many parameter sets (SQLAlchemy's "insertmanyvalues"): a
    # VALUES list built into the statement was compiled afresh each time, 0.15 s a batch.
    statement = (
        sqlite_insert(Event)
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        .returning(Event.event_id, Event.id)
    )
    inserted = await connection.execute(statement, values)
    return {str(event_id): int(row_id) for event_id, row_id in inserted}


async def _claim_postgres(
    connection: AsyncConnection,
    ordered: list[tuple[InboundEvent, uuid.UUID | None]],
    received: datetime,
) -> dict[str, int]:
    """The batch as one array per column, unnested in order: a 1,000-event batch bound
    7 arrays instead of 7,000 parameters (insertmanyvalues took ~90 ms a batch)."""
    events = [event for event, _ in ordered]
    inserted = await connection.execute(
        _UNNESTED,
        {
            "source": [e.source for e in events],
            "event_id": [e.event_id for e in events],
            "type": [e.type for e in events],
            "occurred_at": [e.occurred_at for e in events],
            "properties": [orjson.dumps(e.properties).decode() for e in events],
            "received_at": [received] * len(events),
            "customer_id": [customer for _, customer in ordered],
        },
    )
    return {str(event_id): int(row_id) for event_id, row_id in inserted}


_UNNESTED = text(
    "INSERT INTO events (source, event_id, type, occurred_at, properties, received_at, "
    "customer_id) SELECT source, event_id, type, occurred_at, properties, received_at, "
    "customer_id FROM unnest(CAST(:source AS varchar[]), CAST(:event_id AS varchar[]), "
    "CAST(:type AS varchar[]), CAST(:occurred_at AS timestamptz[]), "
    "CAST(:properties AS json[]), CAST(:received_at AS timestamptz[]), "
    "CAST(:customer_id AS uuid[])) WITH ORDINALITY AS batch(source, event_id, type, "
    "occurred_at, properties, received_at, customer_id, position) ORDER BY position "
    "ON CONFLICT (source, event_id) DO NOTHING RETURNING event_id, id"
)
