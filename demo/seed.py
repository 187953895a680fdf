"""Seeding the embedded database with the deterministic demo population.

The rows are those the production write paths make for these people (the linker's
batch writer, a CRM webhook's consent), built by the same functions: each system's
record through ``prepare``, its ``identity_records`` row and block keys through
``record_rows``, its values as attributes named for the identity that reported them
(``insert_observations``), golden values by ``golden_values`` and each consent statement
through ``state_many``, which names the identity the customer then was. An unmerge on
seeded data then hands each person back what is theirs, as on imported data: with the
identity ids left NULL and no records, the split-off person got an empty profile and
every value stayed on the survivor.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from demo.people.population import Person
from gateway.db.bulk import insert_tuples, matching
from gateway.db.identity_models import IdentityBlockKey, IdentityLink, IdentityRecord
from gateway.db.models import Customer, Identity
from gateway.identity.config import DEFAULT_CONFIG
from gateway.identity.linkage.lookup import MATCH_COLUMNS
from gateway.identity.linkage.rows import record_rows
from gateway.identity.observations import ObservationRow, insert_observations
from gateway.identity.records import PreparedRecord, RecordError, prepare
from gateway.identity.source_ids import DEFAULT_SOURCE_IDS
from gateway.identity.survivorship import GOLDEN_FIELDS, Observation, golden_values
from gateway.identity.values import folded_email
from gateway.privacy.consent import Purpose, state_many
from gateway.privacy.tombstones import Tombstones

Row = dict[str, Any]
CRM_SOURCE = "hubspot"
_SEEDED_SOURCES = ("hubspot", "soap_crm", "shopify", "segment")
# The CRM's record made the customer, with its consent; the other systems' records
# joined it a little later. Statements made while the customer was the CRM's identity
# alone name that identity (``state_many``), as a webhook's would: an unmerge hands
# them back to the right person.
_OTHERS_JOINED_AFTER = timedelta(minutes=5)
_ID_PURPOSE = "customer-id"
# The default rules take the reserved ``.example`` TLD for a placeholder, and two of the
# population's five domains are under it (reserved on purpose: nobody's inbox). Prepared
# with the defaults, those people's records would carry no address at all.
SEED_CONFIG = DEFAULT_CONFIG.model_copy(
    update={"blocked_email_domains": DEFAULT_CONFIG.blocked_email_domains - {"example"}}
)


def customer_id_for(person: Person) -> uuid.UUID:
    """The person's unified id, the same in every demo database: drawn from the person's
    own generator (their place in the synthetic population), not from personal data. A
    ``uuid5`` of the e-mail let anyone holding a pseudonymised export confirm guessed
    addresses against the ids."""
    return uuid.UUID(int=person.rng(_ID_PURPOSE).getrandbits(128), version=4)


def _joined_at(person: Person, source: str) -> datetime:
    return person.created_at + (timedelta(0) if source == CRM_SOURCE else _OTHERS_JOINED_AFTER)


def records_of(person: Person) -> list[PreparedRecord]:
    """What each system holds of the person, as its latest record (``prepare``d as a
    sync, import or webhook prepares it), the CRM's first."""
    shared = {
        "email": person.email,
        "phone": person.phone,
        "first_name": person.first_name,
        "last_name": person.last_name,
        "city": person.city,
    }
    crm = {**shared, "date_of_birth": person.date_of_birth.isoformat()}
    held = (
        (CRM_SOURCE, person.hubspot_id, crm),
        ("soap_crm", f"C-{person.index:06d}", crm),
        ("shopify", str(person.shopify_id), shared),
        ("segment", person.segment_user_id, shared),
    )
    records: list[PreparedRecord] = []
    prepared: dict[int, PreparedRecord] = {}  # by the fields' dict: one per shape
    for source, external_id, values in held:
        # Each system's last change: the profile's, never before it joined.
        observed_at = max(person.updated_at, _joined_at(person, source))
        twin = prepared.get(id(values))
        if twin is None:
            raw = {**values, "external_id": external_id, "observed_at": observed_at}
            prepared[id(values)] = record = prepare(raw, source, SEED_CONFIG)
        else:
            # The same fields as a record prepared already give the same values and
            # keys: only whose record it is differs. Parsing phones is most of
            # ``prepare``'s time, and the demo seeds 4,000 records as it starts.
            if problem := DEFAULT_SOURCE_IDS.problem(source, external_id):
                raise RecordError("external_id", problem)
            record = replace(
                twin,
                source=source,
                external_id=external_id,
                observed_at=observed_at,
                values=dict(twin.values),
            )
        records.append(record)
    return records


def _customer_row(owner: uuid.UUID, person: Person, records: Sequence[PreparedRecord]) -> Row:
    observations = [
        Observation(name, record.values[name], record.source, record.observed_at)
        for record in records
        for name in GOLDEN_FIELDS
        if name in record.values
    ]
    golden = golden_values(owner, observations, SEED_CONFIG, {})
    return {
        "id": owner,
        **golden,
        "email_key": folded_email(golden["email"], SEED_CONFIG),
        "locale": person.locale,
        "created_at": person.created_at,
        "updated_at": person.updated_at,
    }


async def _identities(
    connection: AsyncConnection, held: Sequence[tuple[uuid.UUID, Person, PreparedRecord]]
) -> list[int]:
    """One identity per record, made when its record joined the person; their ids, in
    order (read back: an INSERT ... RETURNING of many rows took a round trip each)."""
    rows = [
        {
            "customer_id": owner,
            "source": record.source,
            "external_id": record.external_id,
            "created_at": _joined_at(person, record.source),
        }
        for owner, person, record in held
    ]
    if not rows:
        return []
    await connection.execute(insert(Identity), rows)
    ids: dict[tuple[str, str], int] = {}
    for clause in matching(connection, Identity.customer_id, [owner for owner, _, _ in held]):
        query = select(Identity.id, Identity.source, Identity.external_id).where(clause)
        ids.update(
            {(source, external): i for i, source, external in await connection.execute(query)}
        )
    return [ids[record.identity_key] for _, _, record in held]


_CONSENTS = (
    (Purpose.EMAIL_MARKETING, "email_marketing_consent"),
    (Purpose.PERSONALISATION, "personalisation_consent"),
    (Purpose.ANALYTICS, "analytics_consent"),
)


async def _consents(connection: AsyncConnection, people: dict[uuid.UUID, Person]) -> None:
    """Each person's CRM statements, made with the record that made the customer (then
    its one identity), through ``state_many`` as a CRM webhook states them."""
    for (purpose, attribute), granted in itertools.product(_CONSENTS, (True, False)):
        stating = {owner: p for owner, p in people.items() if getattr(p, attribute) is granted}
        at = {owner: _joined_at(p, CRM_SOURCE) for owner, p in stating.items()}
        await state_many(connection, purpose, granted, dict.fromkeys(stating, CRM_SOURCE), at)


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


async def _write(connection: AsyncConnection, people: Sequence[Person]) -> None:
    owners = {customer_id_for(person): person for person in people}
    held = {owner: records_of(person) for owner, person in owners.items()}
    await connection.execute(
        insert(Customer), [_customer_row(o, p, held[o]) for o, p in owners.items()]
    )
    # The CRM's identities, then its statements (naming them), then the other systems'.
    crm = [(o, p, held[o][0]) for o, p in owners.items()]
    others = [(o, p, record) for o, p in owners.items() for record in held[o][1:]]
    ids = await _identities(connection, crm)
    await _consents(connection, owners)
    ids += await _identities(connection, others)
    order = crm + others
    records = [record for _, _, record in order]
    rows = record_rows(records, [(None, None)] * len(records), dict(enumerate(ids)), {})
    columns = ("identity_id", *MATCH_COLUMNS, "observed_at")
    await insert_tuples(connection, _table(IdentityRecord), columns, rows.records)
    await insert_tuples(
        connection, _table(IdentityBlockKey), ("identity_id", "key_hash"), rows.keys
    )
    # Every value with the identity whose record reported it, the CRM's language too
    # (reported beside its record, as a webhook's extra properties are).
    observations: list[ObservationRow] = []
    for (owner, person, record), identity in zip(order, ids, strict=True):
        said = (record.source, record.observed_at, identity)
        observations += [(owner, name, value, *said) for name, value in record.values.items()]
        if record.source == CRM_SOURCE:
            observations.append((owner, "locale", person.locale, *said))
    await insert_observations(connection, observations, owners.keys())


async def seed(
    sessions: async_sessionmaker[AsyncSession],
    people: Sequence[Person],
    tombstones: Tombstones | None = None,
) -> int:
    """Insert the people not yet present; returns how many were added. Safe to re-run:
    a person is present while their CRM identity is, on whichever customer a merge or an
    unmerge left it (read by e-mail, a merged-away person was seeded again and the demo
    refused to start on their identities); one erased (a tombstone of their CRM id, under
    ``tombstones``) is not seeded again: a restart brought them back (a fresh review)."""
    async with sessions.begin() as session:
        held = set(
            await session.scalars(select(Identity.external_id).where(Identity.source == CRM_SOURCE))
        )
        missing = [p for p in people if p.hubspot_id not in held]
        if tombstones is not None and missing:
            digests = {tombstones.digest("id", f"{CRM_SOURCE}:{p.hubspot_id}"): p for p in missing}
            erased = await tombstones.blocked(session, set(digests))
            missing = [p for digest, p in digests.items() if digest not in erased]
        if missing:
            await _write(await session.connection(), missing)
    return len(missing)


async def seed_evidence(
    sessions: async_sessionmaker[AsyncSession], people: Sequence[Person]
) -> int:
    """Why each seeded identity belongs to its person, as the linker records it when it
    loads records (``identity_links``): the CRM's record made the customer (``new``), and
    every other system's record joined it on the person's email, which each system holds
    (``email``, matched to the CRM's record). ``seed`` inserts the people as already
    linked, so without this the Customer 360 page has no evidence to show for them. Only
    the people's identities that have none; returns how many links were written."""
    ids = [customer_id_for(person) for person in people]
    written = 0
    async with sessions.begin() as session:
        for start in range(0, len(ids), 500):  # bound the IN list
            part = ids[start : start + 500]
            unlinked = select(IdentityLink.id).where(IdentityLink.identity_id == Identity.id)
            rows = (
                await session.execute(
                    select(Identity.id, Identity.customer_id, Identity.source, Identity.created_at)
                    .where(Identity.customer_id.in_(part), ~unlinked.exists())
                    .order_by(Identity.id)
                )
            ).all()
            crm = {row.customer_id: row.id for row in rows if row.source == CRM_SOURCE}
            links = [
                {
                    "customer_id": row.customer_id,
                    "identity_id": row.id,
                    "matched_identity_id": None
                    if row.source == CRM_SOURCE
                    else crm[row.customer_id],
                    "rule": "new" if row.source == CRM_SOURCE else "email",
                    "score": None,
                    "reason": None,
                    "created_at": row.created_at,
                }
                for row in rows
                if row.customer_id in crm and row.source in _SEEDED_SOURCES
            ]
            if links:
                await session.execute(insert(IdentityLink), links)
            written += len(links)
    return written


async def count_customers(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Customer)) or 0)
