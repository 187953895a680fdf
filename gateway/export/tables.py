"""What each exported table holds: its columns, their kinds, and its Arrow schema.

Every file of a table has the table's columns plus ``_op`` (``upsert`` or ``delete``) and
``_run`` (the run id, sortable): a reader keeps, per ``id``, the row of the latest run
(then the latest ``changed_at``) and drops it when that row is a deletion.  A deletion
carries only ``id``, ``changed_at`` (when it was deleted), ``_op`` and ``_run``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import pyarrow as pa

SCHEMA_VERSION = 1


class Kind(StrEnum):
    TEXT = "text"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    TIME = "time"
    UUID = "uuid"
    JSON = "json"


ARROW_TYPES: dict[Kind, pa.DataType] = {
    Kind.TEXT: pa.string(),
    Kind.INT: pa.int64(),
    Kind.FLOAT: pa.float64(),
    Kind.BOOL: pa.bool_(),
    Kind.TIME: pa.timestamp("us", tz="UTC"),
    Kind.UUID: pa.string(),
    Kind.JSON: pa.string(),
}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    # Columns left out of a pseudonymised export (names, dates of birth, addresses).
    dropped_when_pseudonymised: tuple[str, ...] = ()

    @property
    def key(self) -> Column:
        return self.columns[0]

    def column_names(self, pseudonymised: bool) -> list[str]:
        dropped = self.dropped_when_pseudonymised if pseudonymised else ()
        return [c.name for c in self.columns if c.name not in dropped]

    def schema(self, pseudonymised: bool) -> pa.Schema:
        kinds = {c.name: c.kind for c in self.columns}
        fields = [pa.field(n, ARROW_TYPES[kinds[n]]) for n in self.column_names(pseudonymised)]
        return pa.schema([*fields, pa.field("_op", pa.string()), pa.field("_run", pa.string())])


def _c(name: str, kind: Kind = Kind.TEXT) -> Column:
    return Column(name, kind)


_CHANGED = _c("changed_at", Kind.TIME)

TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "customers",
        (
            _c("id", Kind.UUID),
            _c("email"),
            _c("phone"),
            _c("first_name"),
            _c("last_name"),
            _c("locale"),
            _c("created_at", Kind.TIME),
            _c("updated_at", Kind.TIME),
            _CHANGED,
        ),
        dropped_when_pseudonymised=("first_name", "last_name"),
    ),
    TableSpec(
        "identities",
        (
            _c("id", Kind.INT),
            _c("customer_id", Kind.UUID),
            _c("source"),
            _c("external_id"),
            _c("created_at", Kind.TIME),
            _CHANGED,
        ),
    ),
    TableSpec(
        "identity_links",
        (
            _c("id", Kind.INT),
            _c("customer_id", Kind.UUID),
            _c("identity_id", Kind.INT),
            _c("matched_identity_id", Kind.INT),
            _c("rule"),
            _c("score", Kind.FLOAT),
            _c("reason"),
            _c("model_version", Kind.INT),
            _c("created_at", Kind.TIME),
            _CHANGED,
        ),
        # A manual merge's reason is what an operator typed: often the person's name or
        # address, and nothing tells it apart from harmless text.
        dropped_when_pseudonymised=("reason",),
    ),
    TableSpec(
        "consents",
        (
            _c("id", Kind.INT),
            _c("customer_id", Kind.UUID),
            _c("purpose"),
            _c("granted", Kind.BOOL),
            _c("source"),
            _c("recorded_at", Kind.TIME),
            _CHANGED,
        ),
    ),
    TableSpec(
        "events",
        (
            _c("id", Kind.INT),
            _c("customer_id", Kind.UUID),
            _c("source"),
            _c("event_id"),
            _c("type"),
            _c("occurred_at", Kind.TIME),
            _c("properties", Kind.JSON),
            _c("received_at", Kind.TIME),
            _CHANGED,
        ),
    ),
    TableSpec(
        "attributes",
        (
            _c("id", Kind.INT),
            _c("customer_id", Kind.UUID),
            _c("name"),
            _c("value"),
            _c("source"),
            _c("observed_at", Kind.TIME),
            _CHANGED,
        ),
    ),
)

# Events are exported only for customers who granted this purpose.
ANALYTICS = "analytics"
