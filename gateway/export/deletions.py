"""The rows a window deleted, as tombstones: ``id`` and ``changed_at`` (when deleted).

Deletions come from ``export_deletions`` (the triggers of migration 0011 log every
deleted row), and for events also from consent: every event of a customer who withdrew
analytics consent in the window.  The events changed in the window that are no longer
exported (anonymised by retention, moved onto a customer without consent) are found in
the same pass as the changed rows (``ExportStore.changed``) and added by ``with_unexported``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.models import UtcDateTime
from gateway.export.tables import ANALYTICS, ARROW_TYPES, TABLES, Kind, TableSpec


async def logged_deletions(
    connection: AsyncConnection, windows: Mapping[str, tuple[datetime, datetime]]
) -> dict[str, pa.Table]:
    """``id`` and ``changed_at`` (when deleted) of the rows deleted in each window, and
    for events those of customers who withdrew analytics consent in it.  (The events
    changed in it that are no longer exported, anonymised by retention or moved onto a
    customer without analytics consent, come with the changed rows: ``changed``.)"""
    if not windows:
        return {}
    rows: dict[str, list[tuple[str, datetime]]] = {name: [] for name in windows}
    clauses: list[str] = []
    params: dict[str, object] = {}
    for i, (name, (lo, hi)) in enumerate(windows.items()):
        clauses.append(f"(table_name = :t{i} AND deleted_at >= :lo{i} AND deleted_at < :hi{i})")
        params |= {f"t{i}": name, f"lo{i}": lo, f"hi{i}": hi}
    stamps = [bindparam(k, type_=UtcDateTime()) for k in params if not k.startswith("t")]
    logged = (
        text(
            "SELECT table_name, row_id, deleted_at FROM export_deletions WHERE "
            f"{' OR '.join(clauses)} ORDER BY id"
        )
        .bindparams(*stamps)
        .columns(deleted_at=UtcDateTime())
    )
    for name, row_id, at in await connection.execute(logged, params):
        rows[name].append((str(row_id), at))
    if "events" in windows:
        lo, hi = windows["events"]
        withheld = text(
            "SELECT id FROM events WHERE changed_at < :hi AND customer_id IN "
            f"(SELECT customer_id FROM consents WHERE purpose = '{ANALYTICS}' "
            "AND granted = false AND changed_at >= :lo AND changed_at < :hi)"
        ).bindparams(bindparam("lo", type_=UtcDateTime()), bindparam("hi", type_=UtcDateTime()))
        found = await connection.scalars(withheld, {"lo": lo, "hi": hi})
        rows["events"] += [(str(i), hi) for i in found]
    return {name: _tombstones(_spec(name), found) for name, found in rows.items()}


def with_unexported(deleted: pa.Table, unexported: Sequence[pa.Table]) -> pa.Table:
    """The deletions and, after them, the unexported events not among them already."""
    if not unexported:
        return deleted
    gone = pa.concat_tables(unexported).cast(deleted.schema)
    if deleted.num_rows:
        gone = gone.filter(pc.invert(pc.is_in(gone.column("id"), deleted.column("id"))))
    return pa.concat_tables([deleted, gone])


def _spec(name: str) -> TableSpec:
    return next(spec for spec in TABLES if spec.name == name)


def _tombstones(spec: TableSpec, rows: Sequence[tuple[str, datetime]]) -> pa.Table:
    ids: list[Any] = [_key(spec, row_id) for row_id, _ in rows]
    return pa.table(
        {
            spec.key.name: pa.array(ids, type=ARROW_TYPES[spec.key.kind]),
            "changed_at": pa.array([at for _, at in rows], type=ARROW_TYPES[Kind.TIME]),
        }
    )


def _key(spec: TableSpec, row_id: str) -> object:
    if spec.key.kind is Kind.INT:
        return int(row_id)
    return str(uuid.UUID(row_id))
