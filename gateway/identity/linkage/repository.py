"""Writing a batch's decisions: profiles, identities, provenance and evidence.

Every write is one bulk insert per table (COPY on Postgres), so a batch of thousands
costs a few dozen round trips, not thousands, and all of it is in the caller's
transaction.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import Table, delete, insert, select, text
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
from gateway.identity.config import IdentityConfig
from gateway.identity.linkage.folding import fold_customers
from gateway.identity.linkage.linker import Decision, KnownState
from gateway.identity.linkage.lookup import MATCH_COLUMNS, check_still_read
from gateway.identity.linkage.rows import (
    Plan,
    RecordRows,
    identity_plan,
    link_rows,
    observation_rows,
    plan_of,
    record_rows,
)
from gateway.identity.observations import (
    OBSERVATION,
    Fact,
    insert_split_observations,
)
from gateway.identity.records import RECORD_FIELDS, PreparedRecord
from gateway.identity.survivorship import GOLDEN_FIELDS, Observation, golden_values
from gateway.identity.values import folded_email

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
    written: Written | None = None,
) -> None:
    """``written``: the records and block keys ``decide_writing_records`` wrote already."""
    now = utcnow()
    # Every stored customer this batch changes, locked up front in id order (folds
    # delete rows: then FOR UPDATE); new customers are the batch's own.
    merges = [(gone, d.customer_id) for d in decisions for gone in d.merged]
    fresh_owners = {d.customer_id for d in decisions if d.new_customer}
    owners = {d.customer_id for d in decisions} - fresh_owners
    locked = await lock_customers(
        connection, owners | {g for g, _ in merges}, deleting=bool(merges)
    )
    await check_still_read(connection, decisions, state, owners, locked)
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

    stored_facts: set[Fact] = set()
    existing_golden = await _existing_golden(
        connection, existing_ids, clusters, config, email_owners, stored_facts
    )
    new_rows = []
    for owner in new_ids:
        observations = [o for record in clusters[owner] for o in _observations(record)]
        golden = golden_values(owner, observations, config, email_owners)
        if golden["email"]:
            email_owners[golden["email"]] = owner
        key = folded_email(golden["email"], config)
        new_rows.append(
            {"id": owner, **golden, "email_key": key, "created_at": now, "updated_at": now}
        )

    fresh = [d for d in decisions if d.identity_id is None and d.duplicate_of is None]
    positions = [
        i for i, d in enumerate(decisions) if d.identity_id is None and d.duplicate_of is None
    ]
    identity = _table(Identity)
    plan = plan_of(decisions)
    steps = _Steps()
    records, observed, links = (steps.add(), steps.add(), steps.add())
    building: asyncio.Future[None] | None = None

    def build(identity_ids: dict[int, int]) -> asyncio.Future[None]:
        """The rows of every later COPY, in a thread, in the order they are written: on
        two cores it builds the next table's rows while Postgres takes the one before
        (the event loop only waits on the socket meanwhile)."""
        return asyncio.ensure_future(
            asyncio.to_thread(
                _run_steps,
                steps,
                (
                    partial(RecordRows, [], [], [])
                    if written is not None
                    else partial(
                        record_rows, [d.record for d in decisions], plan, identity_ids, state.stored
                    )
                ),
                partial(observation_rows, decisions, identity_ids, fresh_owners, stored_facts),
                partial(link_rows, decisions, identity_ids, now, model_version),
            )
        )

    try:
        if is_postgres(connection):
            # Ids first (from the sequence alone), so the rows naming them are built
            # while the customers and identities are copied.
            if written is not None:
                ids, identity_ids = written.ids, written.identity_ids
            else:
                ids = await allocate_ids(connection, identity, len(fresh)) if fresh else []
                identity_ids = _identity_ids(plan, positions, ids)
            building = build(identity_ids)
            await insert_rows(connection, _table(Customer), new_rows)
            await insert_tuples(
                connection,
                identity,
                ("id", "customer_id", "source", "external_id", "created_at"),
                [
                    (i, d.customer_id, d.record.source, d.record.external_id, now)
                    for i, d in zip(ids, fresh, strict=True)
                ],
            )
        else:
            await insert_rows(connection, _table(Customer), new_rows)
            ids = []
            if fresh:
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
                    insert(Identity).returning(Identity.id, sort_by_parameter_order=True),
                    identity_rows,
                )
                ids = list(result.scalars().all())
            identity_ids = _identity_ids(plan, positions, ids)
            building = build(identity_ids)
        await _write_records(connection, await asyncio.wrap_future(records))
        fresh_facts, known_facts = await asyncio.wrap_future(observed)
        await insert_split_observations(connection, fresh_facts, known_facts, checked=True)
        await insert_tuples(
            connection, _table(IdentityLink), _LINK_COLUMNS, await asyncio.wrap_future(links)
        )
        await _write_reviews(connection, decisions, identity_ids, now, model_version)
        await update_by_id(connection, _table(Customer), existing_golden)
    finally:
        if building is not None:
            # Never leave the thread behind (an error before its rows were taken).
            await asyncio.gather(building, return_exceptions=True)


class _Steps(list[concurrent.futures.Future[Any]]):
    def add(self) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.append(future)
        return future


def _run_steps(
    futures: Sequence[concurrent.futures.Future[Any]], *makers: Callable[[], Any]
) -> None:
    """Each maker's result into its future, one after the other (in a worker thread)."""
    for future, make in zip(futures, makers, strict=True):
        try:
            future.set_result(make())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the rows
            future.set_exception(exc)


def _identity_ids(plan: Plan, positions: Sequence[int], ids: Sequence[int]) -> dict[int, int]:
    """The identity id of each batch position: new, stored, or an earlier position's."""
    identity_ids = dict(zip(positions, ids, strict=True))
    for position, (identity_id, duplicate_of) in enumerate(plan):
        if identity_id is not None:
            identity_ids[position] = identity_id
        elif duplicate_of is not None:
            identity_ids[position] = identity_ids[duplicate_of]
    return identity_ids


# From this many records a batch's records and block keys are copied while it is decided
# (``decide_writing_records``); a webhook's few are not worth a thread.
_EARLY_FROM = 500
_EARLY = "gateway.early_identity_rows"  # migration 0025


@dataclass(frozen=True, slots=True)
class Written:
    """The identity ids ``decide_writing_records`` took (the new identities', in batch
    order) and the identity id of each batch position."""

    ids: list[int]
    identity_ids: dict[int, int]


async def decide_writing_records(
    connection: AsyncConnection,
    records: Sequence[PreparedRecord],
    state: KnownState,
    decide: Callable[[], list[Decision]],
) -> tuple[list[Decision], Written | None]:
    """``decide()``'s decisions; on Postgres, for a batch of new identities only, with
    their records and block keys copied meanwhile (``decide`` runs in a thread): these
    rows depend on which identities are new, not on who they belong to, so Postgres takes
    a fifth of the batch's work while the gateway decides. A batch that updates stored
    identities is decided first and written as before (its rows replace stored ones, in
    the order the linker gives them)."""
    if not is_postgres(connection) or len(records) < _EARLY_FROM:
        return decide(), None
    plan = identity_plan(records, state)
    if any(identity_id is not None for identity_id, _ in plan):
        return decide(), None
    positions = [p for p, (_, duplicate_of) in enumerate(plan) if duplicate_of is None]
    ids = await allocate_ids(connection, _table(Identity), len(positions))
    identity_ids = _identity_ids(plan, positions, ids)
    deciding = asyncio.ensure_future(asyncio.to_thread(decide))
    try:
        rows = record_rows(records, plan, identity_ids, state.stored)
        # Ids this transaction took from the sequence and inserts before it commits:
        # their identities come after the decisions, so the check waits for nothing.
        await connection.execute(text(f"SET LOCAL {_EARLY} = 'on'"))
        await _write_records(connection, rows)
        await connection.execute(text(f"SET LOCAL {_EARLY} = 'off'"))
    finally:
        await asyncio.gather(deciding, return_exceptions=True)
    decisions = deciding.result()
    if plan_of(decisions) != plan:
        raise RuntimeError("the linker's identities are not those the batch's rows name")
    return decisions, Written(ids, identity_ids)


async def _existing_golden(
    connection: AsyncConnection,
    owners: Sequence[uuid.UUID],
    clusters: dict[uuid.UUID, list[PreparedRecord]],
    config: IdentityConfig,
    email_owners: dict[str, uuid.UUID],
    stored_facts: set[Fact],
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
        key = folded_email(golden["email"], config)
        updates.append({"id": owner, **golden, "email_key": key, "updated_at": now})
    return updates


async def _write_records(connection: AsyncConnection, rows: RecordRows) -> None:
    for clause in matching(connection, IdentityBlockKey.identity_id, rows.replaced):
        await connection.execute(delete(IdentityBlockKey).where(clause))
    for clause in matching(connection, IdentityRecord.identity_id, rows.replaced):
        await connection.execute(delete(IdentityRecord).where(clause))
    columns = ("identity_id", *MATCH_COLUMNS, "observed_at")
    await insert_tuples(connection, _table(IdentityRecord), columns, rows.records)
    await insert_tuples(
        connection, _table(IdentityBlockKey), ("identity_id", "key_hash"), rows.keys
    )


async def _write_reviews(
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
