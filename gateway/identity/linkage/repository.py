"""Writing a batch's decisions: profiles, identities, provenance and evidence.

Every write is one bulk insert per table (COPY on Postgres), so a batch of thousands
costs a few dozen round trips, not thousands, and all of it is in the caller's
transaction.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.bulk import (
    allocate_ids,
    insert_rows,
    insert_tuples,
    is_postgres,
    matching,
    rows_where_in,
    update_by_id,
)
from gateway.db.identity_models import (
    IdentityBlockKey,
    IdentityLink,
    IdentityRecord,
    IdentityReview,
)
from gateway.db.locks import lock_customers
from gateway.db.models import Attribute, Customer, Identity, utcnow
from gateway.db.retries import StaleRead
from gateway.identity.config import IdentityConfig
from gateway.identity.linkage.folding import fold_customers
from gateway.identity.linkage.linker import Decision, KnownState
from gateway.identity.linkage.lookup import MATCH_COLUMNS
from gateway.identity.observations import (
    OBSERVATION,
    ObservationRow,
    insert_split_observations,
)
from gateway.identity.records import RECORD_FIELDS, PreparedRecord
from gateway.identity.survivorship import GOLDEN_FIELDS, Observation, golden_values

_LINK_COLUMNS = (
    "customer_id",
    "identity_id",
    "matched_identity_id",
    "rule",
    "score",
    "reason",
    "model_version",
    "created_at",
)


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def _observations(record: PreparedRecord) -> Iterable[Observation]:
    for name in GOLDEN_FIELDS:
        value = record.values.get(name)
        if value is not None:
            yield Observation(name, value, record.source, record.observed_at)


async def write_batch(
    connection: AsyncConnection,
    decisions: Sequence[Decision],
    state: KnownState,
    config: IdentityConfig,
    model_version: int | None = None,
) -> None:
    now = utcnow()
    # Every stored customer this batch changes, locked up front in id order (folds
    # delete rows: then FOR UPDATE); new customers are the batch's own.
    merges = [(gone, d.customer_id) for d in decisions for gone in d.merged]
    fresh_owners = {d.customer_id for d in decisions if d.new_customer}
    owners = {d.customer_id for d in decisions} - fresh_owners
    locked = await lock_customers(
        connection, owners | {g for g, _ in merges}, deleting=bool(merges)
    )
    if not owners <= locked:
        # Read before the lock, folded away or erased since: decide again on fresh reads.
        raise StaleRead("a customer the batch links to is gone")
    folded = await fold_customers(connection, merges)
    for email, owner in list(state.golden_emails.items()):
        if owner in folded:
            del state.golden_emails[email]
    clusters: defaultdict[uuid.UUID, list[PreparedRecord]] = defaultdict(list)
    for decision in decisions:
        clusters[decision.customer_id].append(decision.record)
    new_ids = [d.customer_id for d in decisions if d.new_customer]
    existing_ids = [owner for owner in clusters if owner not in fresh_owners]
    email_owners = dict(state.golden_emails)

    stored_facts: set[ObservationRow] = set()
    existing_golden = await _existing_golden(
        connection, existing_ids, clusters, config, email_owners, stored_facts
    )
    new_rows = []
    for owner in new_ids:
        observations = [o for record in clusters[owner] for o in _observations(record)]
        golden = golden_values(owner, observations, config, email_owners)
        if golden["email"]:
            email_owners[golden["email"]] = owner
        new_rows.append({"id": owner, **golden, "created_at": now, "updated_at": now})
    await insert_rows(connection, _table(Customer), new_rows)

    fresh = [d for d in decisions if d.identity_id is None and d.duplicate_of is None]
    positions = [
        i for i, d in enumerate(decisions) if d.identity_id is None and d.duplicate_of is None
    ]
    identity_ids: dict[int, int] = {}
    if fresh and is_postgres(connection):
        ids = await allocate_ids(connection, _table(Identity), len(fresh))
        await insert_tuples(
            connection,
            _table(Identity),
            ("id", "customer_id", "source", "external_id", "created_at"),
            [
                (i, d.customer_id, d.record.source, d.record.external_id, now)
                for i, d in zip(ids, fresh, strict=True)
            ],
        )
        identity_ids = dict(zip(positions, ids, strict=True))
    elif fresh:
        identity_rows = [
            {
                "customer_id": d.customer_id,
                "source": d.record.source,
                "external_id": d.record.external_id,
                "created_at": now,
            }
            for d in fresh
        ]
        result = await connection.execute(
            insert(Identity).returning(Identity.id, sort_by_parameter_order=True), identity_rows
        )
        identity_ids = dict(zip(positions, result.scalars().all(), strict=True))
    for position, decision in enumerate(decisions):
        if decision.identity_id is not None:
            identity_ids[position] = decision.identity_id
        elif decision.duplicate_of is not None:
            identity_ids[position] = identity_ids[decision.duplicate_of]

    await _write_records(
        connection, decisions, identity_ids, state.stored, fresh_owners, stored_facts
    )
    await _write_evidence(connection, decisions, identity_ids, now, model_version)
    await update_by_id(connection, _table(Customer), existing_golden)


async def _existing_golden(
    connection: AsyncConnection,
    owners: Sequence[uuid.UUID],
    clusters: dict[uuid.UUID, list[PreparedRecord]],
    config: IdentityConfig,
    email_owners: dict[str, uuid.UUID],
    stored_facts: set[ObservationRow],
) -> list[dict[str, Any]]:
    """The golden values of the stored customers the batch touches; adds to
    ``stored_facts`` the observations of record fields they hold already."""
    observations: defaultdict[uuid.UUID, list[Observation]] = defaultdict(list)
    current: dict[uuid.UUID, dict[str, Any]] = {}
    golden_columns = [getattr(Customer, name) for name in GOLDEN_FIELDS]
    for customer_id, *values in await rows_where_in(
        connection, (Customer.id, *golden_columns), Customer.id, owners
    ):
        held = current[customer_id] = dict(zip(GOLDEN_FIELDS, values, strict=True))
        if held["email"]:
            email_owners.setdefault(held["email"], customer_id)
    # The golden ones as ``golden_observations`` reads them, oldest first (golden values
    # break ties by it), through the driver: a batch reads tens of thousands.  Those of
    # every field a record carries are what the batch must not store again.
    for fact in await rows_where_in(
        connection,
        OBSERVATION,
        Attribute.customer_id,
        owners,
        also=(Attribute.name, RECORD_FIELDS),
        order_by=Attribute.id,
    ):
        observer, name, value, source, observed_at = fact
        stored_facts.add((observer, name, value, source, observed_at))
        if value is not None and name in GOLDEN_FIELDS:
            observations[observer].append(Observation(name, value, source, observed_at))
    # Every address a golden e-mail could become, with whoever holds it now: one held by
    # a customer outside this batch (seen under another record) must be skipped too, or
    # the update breaks ``customers.email``'s uniqueness.
    candidates = {o.value for group in observations.values() for o in group if o.name == "email"}
    candidates |= {r.values["email"] for o in owners for r in clusters[o] if "email" in r.values}
    for clause in matching(connection, Customer.email, candidates - set(email_owners)):
        for email, holder in await connection.execute(
            select(Customer.email, Customer.id).where(clause)
        ):
            if email:
                email_owners.setdefault(email, holder)
    updates = []
    now = utcnow()
    for owner in owners:
        merged = observations[owner] + [o for r in clusters[owner] for o in _observations(r)]
        golden = golden_values(owner, merged, config, email_owners)
        stored = current.get(owner)
        for name in GOLDEN_FIELDS:
            # A value set without provenance (before this table) stays until a source speaks.
            if golden[name] is None and stored is not None:
                golden[name] = stored[name]
        if golden["email"]:
            email_owners[golden["email"]] = owner
        updates.append({"id": owner, **golden, "updated_at": now})
    return updates


def _stored(columns: dict[str, str | None] | None, record: PreparedRecord) -> PreparedRecord | None:
    if columns is None:
        return None
    return replace(
        record,
        email_key=columns["email_key"],
        phone=columns["phone"],
        first_name=columns["first_name"],
        last_name=columns["last_name"],
        date_of_birth=columns["date_of_birth"],
        address=columns["address"],
        city=columns["city"],
        postcode=columns["postcode"],
        values={},
    )


def _overlay(earlier: PreparedRecord, record: PreparedRecord) -> PreparedRecord:
    """A source that omits a field has not erased it: keep the key it gave before."""
    merged = replace(
        record, **{name: getattr(record, name) or getattr(earlier, name) for name in MATCH_COLUMNS}
    )
    merged.index_keys()
    return merged


async def _write_records(
    connection: AsyncConnection,
    decisions: Sequence[Decision],
    identity_ids: dict[int, int],
    stored: dict[int, dict[str, str | None]],
    fresh_owners: set[uuid.UUID],
    stored_facts: set[ObservationRow],
) -> None:
    latest: dict[int, PreparedRecord] = {}
    for position, decision in enumerate(decisions):
        record = decision.record
        earlier = latest.get(identity_ids[position]) or _stored(
            stored.get(identity_ids[position]), record
        )
        latest[identity_ids[position]] = _overlay(earlier, record) if earlier else record
    replaced = sorted(
        {
            identity_ids[p]
            for p, d in enumerate(decisions)
            if d.identity_id is not None or d.duplicate_of is not None
        }
    )
    for clause in matching(connection, IdentityBlockKey.identity_id, replaced):
        await connection.execute(delete(IdentityBlockKey).where(clause))
    for clause in matching(connection, IdentityRecord.identity_id, replaced):
        await connection.execute(delete(IdentityRecord).where(clause))
    # Tuples straight to COPY: tens of thousands of rows, no dict per row.
    records = [
        (
            identity_id,
            *(r.email_key, r.phone, r.first_name, r.last_name, r.date_of_birth),
            *(r.address, r.city, r.postcode, r.observed_at),
        )
        for identity_id, r in latest.items()
    ]
    keys = [(i, key) for i, r in latest.items() for key in r.stored_block_keys()]

    async def copy() -> None:
        columns = ("identity_id", *MATCH_COLUMNS, "observed_at")
        await insert_tuples(connection, _table(IdentityRecord), columns, records)
        await insert_tuples(connection, _table(IdentityBlockKey), ("identity_id", "key_hash"), keys)

    # The observations (once each: a record seen again, say an import rerun after a
    # crash, adds no rows) are sorted out in a thread while Postgres takes the block
    # keys: the interpreter is free while the event loop waits on it.
    (fresh, known), _ = await asyncio.gather(
        asyncio.to_thread(_observation_rows, decisions, fresh_owners, stored_facts), copy()
    )
    await insert_split_observations(connection, fresh, known, checked=True)


def _observation_rows(
    decisions: Sequence[Decision],
    fresh_owners: set[uuid.UUID],
    stored_facts: set[ObservationRow],
) -> tuple[list[ObservationRow], list[ObservationRow]]:
    """The batch's observations, each once, in order (what ``insert_observations`` makes of
    them), split into those of new and of stored customers, these without the ones
    ``stored_facts`` holds already; without hashing a new customer's id per row (a
    Python-level hash, and a batch has tens of thousands of rows): a row can only repeat
    one of the same customer's, so only customers with several records here keep a set
    of what they said."""
    records: defaultdict[uuid.UUID, int] = defaultdict(int)
    for d in decisions:
        records[d.customer_id] += 1
    said: dict[uuid.UUID, set[tuple[str, str, str, Any]]] = {}
    fresh: list[ObservationRow] = []
    known: list[ObservationRow] = []
    for d in decisions:
        owner, source, observed_at = d.customer_id, d.record.source, d.record.observed_at
        if owner not in fresh_owners:
            # A stored customer's id came from the driver, whose UUIDs hash in C.
            for name, value in d.record.values.items():
                row = (owner, name, value, source, observed_at)
                if row not in stored_facts:
                    stored_facts.add(row)
                    known.append(row)
            continue
        if records[owner] == 1:
            fresh += [(owner, n, v, source, observed_at) for n, v in d.record.values.items()]
            continue
        seen = said.setdefault(owner, set())
        for name, value in d.record.values.items():
            fact = (name, value, source, observed_at)
            if fact not in seen:
                seen.add(fact)
                fresh.append((owner, name, value, source, observed_at))
    return fresh, known


async def _write_evidence(
    connection: AsyncConnection,
    decisions: Sequence[Decision],
    identity_ids: dict[int, int],
    now: Any,
    model_version: int | None,
) -> None:
    def resolve(ref: int | None) -> int | None:
        if ref is None:
            return None
        return ref if ref > 0 else identity_ids[-ref - 1]

    # Tuples straight to COPY, as the records: a row per record of the batch.
    links = [
        (
            d.customer_id,
            identity_ids[p],
            resolve(d.matched),
            d.rule,
            d.score,
            None,
            model_version if d.rule == "probabilistic" else None,
            now,
        )
        for p, d in enumerate(decisions)
        if d.identity_id is None and d.duplicate_of is None
    ]
    await insert_tuples(connection, _table(IdentityLink), _LINK_COLUMNS, links)
    reviews = [
        {
            "identity_id": identity_ids[p],
            "candidate_customer_id": d.review.candidate_customer_id,
            "candidate_identity_id": resolve(d.review.candidate),
            "score": d.review.score,
            "levels": d.review.levels,
            "model_version": model_version,
            "reason": d.review.reason,
            "status": "open",
            "created_at": now,
        }
        for p, d in enumerate(decisions)
        if d.review is not None
    ]
    if reviews:
        # Few rows, and a JSON column: a plain insert, not COPY.
        await connection.execute(insert(IdentityReview), reviews)
