"""Attribute observations: writing each once (``uq_attributes_observation``, migration
0010), and reading those golden values are chosen from.

An observation is (customer, name, source, observed_at, value), stored with the
identity that reported it (one of them, if two report it at once).  Rows of customers this
transaction created cannot exist yet and go by COPY on Postgres; rows of stored
customers go through INSERT ... ON CONFLICT DO NOTHING, so an import run again after a
crash, or a value resent, adds nothing.  Moving rows from one customer to another (a
merge, a fold) first drops the rows the target already holds.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, delete, exists, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import aliased

from gateway.db.bulk import copy_unless_duplicate, insert_tuples, is_postgres
from gateway.db.models import Attribute, Identity, value_digest
from gateway.identity.survivorship import GOLDEN_FIELDS, Observation

# (customer_id, name, value, source, observed_at): what makes an observation one
Fact = tuple[uuid.UUID, str, str | None, str, datetime]
# A fact and the identity whose record reported it (None: the gateway's own)
ObservationRow = tuple[uuid.UUID, str, str | None, str, datetime, int | None]
COLUMNS = ("customer_id", "name", "value", "source", "observed_at", "identity_id")
OBSERVATION = tuple(getattr(Attribute, name) for name in COLUMNS[:5])  # a Fact, to select
_TABLE: Table = Attribute.__table__  # type: ignore[assignment]


async def insert_observations(
    connection: AsyncConnection,
    rows: Sequence[ObservationRow],
    fresh_owners: Collection[uuid.UUID] = (),
) -> None:
    """Store each observation unless it is stored already; ``fresh_owners`` are
    customers created in this transaction (their rows are bulk-copied unchecked)."""
    # A batch may carry one observation twice (the first identity to report it keeps it).
    first: dict[tuple[object, ...], ObservationRow] = {}
    for row in rows:
        first.setdefault(row[:5], row)
    unique = list(first.values())
    if not unique:
        return
    fresh = [row for row in unique if row[0] in fresh_owners]
    known = [row for row in unique if row[0] not in fresh_owners] if fresh else unique
    await insert_split_observations(connection, fresh, known)


async def insert_reported(
    connection: AsyncConnection,
    customer_id: uuid.UUID,
    identity: tuple[str, str],
    values: Mapping[str, str | None],
    said: tuple[str, datetime],
) -> None:
    """Values the identity (source, external id) reported beside its record, stored for
    ``customer_id`` with that identity and ``said`` (source, time), once each: the same
    value resent under another event id adds no row."""
    if not values:
        return
    source, external_id = identity
    identity_id = await connection.scalar(
        select(Identity.id).where(Identity.source == source, Identity.external_id == external_id)
    )
    rows = [(customer_id, name, value, *said, identity_id) for name, value in values.items()]
    await insert_observations(connection, rows)


async def insert_split_observations(
    connection: AsyncConnection,
    fresh: Sequence[ObservationRow],
    known: Sequence[ObservationRow],
    *,
    checked: bool = False,
) -> None:
    """``insert_observations`` of rows already made unique and split: ``fresh`` of
    customers created in this transaction, ``known`` of stored ones.  ``checked``: the
    caller read the stored customers' observations under their locks and left out those
    stored already; on Postgres the rest are then copied as they are (a plain COPY costs
    Postgres about half an INSERT ... ON CONFLICT), and only if one was written meanwhile
    after all do they take the conflict-skipping way."""
    await insert_tuples(connection, _TABLE, COLUMNS, fresh)
    if (
        checked
        and is_postgres(connection)
        and len(known) >= _STAGED
        and await copy_unless_duplicate(connection, _TABLE, COLUMNS, known)
    ):
        return
    if not known:
        return
    if is_postgres(connection) and len(known) >= _STAGED:
        await _insert_staged(connection, known)
        return
    if is_postgres(connection):
        # One statement over unnested arrays: no per-row round trip, and COPY cannot
        # skip conflicts.
        arrays = ", ".join(
            f"CAST(:{name} AS {_TABLE.c[name].type.compile(dialect=connection.dialect)}[])"
            for name in COLUMNS
        )
        await connection.execute(
            text(
                f"INSERT INTO attributes ({', '.join(COLUMNS)}) SELECT * FROM unnest({arrays}) "
                "ON CONFLICT DO NOTHING"
            ),
            {name: [row[i] for row in known] for i, name in enumerate(COLUMNS)},
        )
        return
    await connection.execute(
        sqlite_insert(Attribute).on_conflict_do_nothing(),
        [dict(zip(COLUMNS, row, strict=True)) for row in known],
    )


# From this many rows of stored customers (an import batch, not a webhook's handful):
# COPY into a session-local staging table, then one INSERT ... SELECT that skips
# conflicts.  Binding the rows as arrays made asyncpg check every element of every
# array against collections.abc (eight Python-level isinstance calls a row: a tenth of
# an import's CPU); COPY encodes rows without them.  Two more round trips, so not for
# a few rows.
_STAGED = 500
_STAGING = "attribute_rows"


async def _insert_staged(connection: AsyncConnection, rows: Sequence[ObservationRow]) -> None:
    columns = ", ".join(COLUMNS)
    # Temporary: one per database session, created once; emptied at each commit.
    await connection.execute(
        text(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING} ON COMMIT DELETE ROWS "
            f"AS SELECT {columns} FROM attributes WITH NO DATA"
        )
    )
    await connection.execute(text(f"TRUNCATE {_STAGING}"))  # an earlier call this transaction
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    await driver.copy_records_to_table(_STAGING, columns=list(COLUMNS), records=rows)
    await connection.execute(
        text(
            f"INSERT INTO attributes ({columns}) SELECT {columns} FROM {_STAGING} "
            "ON CONFLICT DO NOTHING"
        )
    )


async def drop_shared_observations(
    executor: AsyncConnection | AsyncSession, gone: uuid.UUID, into: uuid.UUID
) -> None:
    """Delete ``gone``'s observations that ``into`` holds too, before ``gone``'s rows move
    to ``into`` (the move would otherwise break the unique key)."""
    kept = aliased(Attribute)
    same: Any = and_(
        kept.customer_id == into,
        kept.name == Attribute.name,
        kept.source == Attribute.source,
        kept.observed_at == Attribute.observed_at,
        value_digest(kept.value) == value_digest(Attribute.value),
    )
    await executor.execute(
        delete(Attribute).where(Attribute.customer_id == gone, exists().where(same))
    )


async def golden_observations(
    executor: AsyncConnection | AsyncSession,
    owners: ColumnElement[bool],
    into: defaultdict[uuid.UUID, list[Observation]],
) -> None:
    """Add to ``into`` the observations of the golden fields of the customers ``owners``
    selects (a condition on ``Attribute.customer_id``), per customer.

    Oldest first: among equally trusted values seen at the same time, the one stored
    first stays golden, whatever order an index returns them in, so the linker and a
    merge choose alike."""
    rows = await executor.execute(
        select(*OBSERVATION).where(owners, Attribute.name.in_(GOLDEN_FIELDS)).order_by(Attribute.id)
    )
    for owner, name, value, source, observed_at in rows:
        if value is not None:
            into[owner].append(Observation(name, value, source, observed_at))
