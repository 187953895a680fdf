"""The SQL of a stream batch: one statement per step over the whole batch (arrays on
Postgres, chunked IN lists elsewhere), all on the batch's connection and transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import String, bindparam, insert, literal, null, select, text, union_all, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.selectable import CompoundSelect

from gateway.db.access_models import EventSubject, Tombstone
from gateway.db.bulk import matching
from gateway.db.models import Customer, Event, Identity
from gateway.privacy.consent import refuses_analytics

if TYPE_CHECKING:
    from gateway.ingest.streams.event_batches import StreamEvent

SOURCE = "segment"
# Rows per INSERT statement off Postgres: 7 parameters each stays below SQLite's limit.
_ROWS_PER_STATEMENT = 1000


async def identities(connection: AsyncConnection, external_ids: set[str]) -> dict[str, uuid.UUID]:
    found: dict[str, uuid.UUID] = {}
    for clause in matching(connection, Identity.external_id, external_ids):
        rows = await connection.execute(
            select(Identity.external_id, Identity.customer_id).where(
                Identity.source == SOURCE, clause
            )
        )
        found.update(dict(rows.all()))
    return found


@dataclass(slots=True)
class Known:
    """What one lookup found for a batch: the erased digests, each known user id's
    customer, and which of those customers refuse analytics."""

    blocked: set[str]
    owners: dict[str, uuid.UUID]
    refused: set[uuid.UUID]


async def known(connection: AsyncConnection, digests: set[str], external_ids: set[str]) -> Known:
    """Tombstones, identities and consent in one round trip (Postgres: three were three
    waits a batch, each long on a busy machine)."""
    found = Known(set(), {}, set())
    rows = await connection.execute(
        _KNOWN, {"digests": list(digests), "external_ids": list(external_ids)}
    )
    for key, customer_id, refused in rows:
        if customer_id is None:
            found.blocked.add(key)
            continue
        found.owners[key] = customer_id
        if refused:
            found.refused.add(customer_id)
    return found


async def emails(connection: AsyncConnection, external_ids: set[str]) -> dict[str, str]:
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


async def stitched(connection: AsyncConnection, digests: set[str]) -> dict[str, uuid.UUID]:
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


async def stitch_devices(
    connection: AsyncConnection, pairs: dict[str, uuid.UUID]
) -> dict[uuid.UUID, int]:
    """Link the unlinked events of each anonymous id digest to its customer; how many
    each customer got. One statement on Postgres (a batch of identifies names a
    thousand devices: one UPDATE each was 4 ms apiece)."""
    linked: dict[uuid.UUID, int] = {}
    if connection.dialect.name == "postgresql":
        ordered = sorted(pairs.items())  # the same row order in every transaction
        rows = await connection.execute(
            _STITCH,
            {"digests": [d for d, _ in ordered], "customers": [c for _, c in ordered]},
        )
        for customer_id, count in rows:
            linked[customer_id] = int(count)
        return linked
    for digest, customer_id in sorted(pairs.items()):
        unlinked = (
            select(EventSubject.event_id).where(EventSubject.digest == digest).scalar_subquery()
        )
        done = await connection.execute(
            update(Event)
            .where(Event.customer_id.is_(None), Event.id.in_(unlinked))
            .values(customer_id=customer_id)
        )
        if count := int(getattr(done, "rowcount", 0) or 0):
            linked[customer_id] = linked.get(customer_id, 0) + count
    return linked


async def insert_events(
    connection: AsyncConnection, items: list[tuple[StreamEvent, uuid.UUID | None]]
) -> set[str]:
    """Insert the rows, and the subjects of the ones stored; the event ids that were
    stored already (by this path or the webhook's: duplicates, left alone, their
    subjects written with them)."""
    if not items:
        return set()
    now = datetime.now(UTC)
    if connection.dialect.name == "postgresql":
        # The whole batch as one JSON document, serialised by orjson at once: arrays of
        # Python values were encoded element by element by the driver (a type check per
        # element, most of the consumer's time in the statement). A constant statement:
        # one prepared plan, nothing compiled per batch.
        rows = orjson.dumps(
            [
                {
                    "i": item.event.event_id,
                    "t": item.event.type,
                    "o": item.event.occurred_at,
                    "p": item.event.properties,
                    "c": owner,
                    "s": ",".join(item.subjects),  # hex digests: no comma inside
                }
                for item, owner in items
            ],
            default=str,  # the driver's own UUID type (owners read back from the database)
        )
        found = await connection.execute(_JSON_INSERT, {"rows": rows.decode(), "now": now})
        return set(found.scalars())
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
    subjects = [
        {"event_id": stored[item.event.event_id], "digest": digest}
        for item, _ in items
        if item.event.event_id in stored
        for digest in item.subjects
    ]
    if subjects:
        await connection.execute(insert(EventSubject), subjects)
    return {item.event.event_id for item, _ in items} - stored.keys()


# The events and the subjects of those stored, in one statement and one round trip;
# it answers the duplicates only (a batch usually has none: no row to decode).
_JSON_INSERT = text(
    """
    WITH batch AS MATERIALIZED (
        SELECT * FROM json_to_recordset(CAST(:rows AS json))
            AS e(i varchar, t varchar, o timestamptz, p json, c uuid, s text)
    ), stored AS (
        INSERT INTO events
            (source, event_id, type, occurred_at, properties, received_at, customer_id)
        SELECT 'segment', i, t, o, p, :now, c FROM batch
        ON CONFLICT (source, event_id) DO NOTHING
        RETURNING event_id, id
    ), subjects AS (
        INSERT INTO event_subjects (event_id, digest)
        SELECT stored.id, subject.digest
        FROM stored JOIN batch ON batch.i = stored.event_id,
            unnest(string_to_array(batch.s, ',')) AS subject(digest)
    )
    SELECT i FROM batch WHERE i NOT IN (SELECT event_id FROM stored)
    """
)


# Each device's unlinked events to its customer, counted per customer.
_STITCH = text(
    """
    WITH linked AS (
        UPDATE events SET customer_id = p.customer_id
        FROM unnest(CAST(:digests AS varchar[]), CAST(:customers AS uuid[]))
            AS p(digest, customer_id),
            event_subjects
        WHERE event_subjects.digest = p.digest
          AND events.id = event_subjects.event_id
          AND events.customer_id IS NULL
        RETURNING p.customer_id
    )
    SELECT customer_id, count(*) FROM linked GROUP BY customer_id
    """
)

# ``known``'s lookup: a tombstone row has no customer; an identity row has its
# customer and whether that customer refuses analytics.
_KNOWN: CompoundSelect[Any] = union_all(
    select(Tombstone.digest, null().label("customer_id"), literal(False)).where(
        Tombstone.digest == bindparam("digests", type_=ARRAY(String)).any_()
    ),
    select(
        Identity.external_id, Identity.customer_id, refuses_analytics(Identity.customer_id)
    ).where(
        Identity.source == SOURCE,
        Identity.external_id == bindparam("external_ids", type_=ARRAY(String)).any_(),
    ),
)
