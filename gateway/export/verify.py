"""Reconciliation: the files against their manifests, and the exported state against the
database, one line per table.

Each file listed in a manifest must exist with the recorded SHA-256 and row count.  The
exported state of a table is, per id, the row of the latest run (latest ``changed_at``
within it), dropped when that row is a deletion; its live ids must be the database's
(events: those of customers with analytics consent), compared by count and by a
checksum over the sorted ids.  Read with DuckDB straight from the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from gateway.export.manifest import Folder
from gateway.export.store import ExportStore, ids_checksum
from gateway.export.tables import TABLES, TableSpec
from gateway.export.writer import file_sha256, filesystem


@dataclass(frozen=True, slots=True)
class Reconciliation:
    table: str
    files: int
    bad_files: tuple[str, ...]
    rows: int
    manifest_rows: int
    exported: int
    database: int
    exported_checksum: str
    database_checksum: str

    @property
    def ok(self) -> bool:
        return (
            not self.bad_files
            and self.rows == self.manifest_rows
            and self.exported == self.database
            and self.exported_checksum == self.database_checksum
        )

    def line(self) -> str:
        files = f"{self.files} files" + (
            f", BAD: {', '.join(self.bad_files)}" if self.bad_files else " ok"
        )
        ids = (
            "ids checksum ok"
            if self.exported_checksum == self.database_checksum
            else (
                f"ids checksum DIFFERS ({self.exported_checksum[:12]} vs "
                f"{self.database_checksum[:12]})"
            )
        )
        return (
            f"{self.table}: {'ok' if self.ok else 'MISMATCH'}; {files}; rows {self.rows} "
            f"(manifest {self.manifest_rows}); live {self.exported} exported, "
            f"{self.database} in the database; {ids}"
        )


def listed_files(manifests: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    return [f for m in manifests for f in m["tables"].get(table, {}).get("files", [])]


def live_query(
    paths: list[str], spec: TableSpec, columns: str = "*", *, source: str | None = None
) -> str:
    """DuckDB SQL for a table's exported state (``columns`` of its live rows), read from
    the files at ``paths`` or from the relation ``source``."""
    files = ", ".join(f"'{p}'" for p in paths)
    source = source or (f"read_parquet([{files}], union_by_name = true, hive_partitioning = false)")
    key = spec.key.name
    return (
        f"SELECT {columns} FROM (SELECT *, row_number() OVER (PARTITION BY {key} ORDER BY "
        "_run DESC, changed_at DESC, _op = 'delete' DESC) AS _nth "
        f"FROM {source}) "
        "WHERE _nth = 1 AND _op = 'upsert'"
    )


def exported_ids(paths: list[str], spec: TableSpec, fs: pafs.FileSystem) -> list[str]:
    if not paths:
        return []
    columns = f"CAST({spec.key.name} AS VARCHAR)"
    with duckdb.connect() as db:
        if isinstance(fs, pafs.LocalFileSystem):
            rows = db.sql(live_query(paths, spec, columns)).fetchall()
        else:
            # DuckDB reads local files in place; elsewhere (an object store) pyarrow
            # fetches the four columns the live state needs and DuckDB scans them.
            needed = [spec.key.name, "changed_at", "_op", "_run"]
            read = pads.dataset(paths, filesystem=fs, format="parquet").to_table(columns=needed)
            db.register("exported_files", read)
            rows = db.sql(live_query([], spec, columns, source="exported_files")).fetchall()
    return [str(r[0]) for r in rows]


async def reconcile(target: str, store: ExportStore) -> list[Reconciliation]:
    fs, root = filesystem(target)
    manifests = Folder(fs, root).manifests()
    found = []
    for spec in TABLES:
        listed = listed_files(manifests, spec.name)
        bad, rows, paths = [], 0, []
        for entry in listed:
            path = f"{root}/{entry['path']}"
            if fs.get_file_info(path).type != pafs.FileType.File:
                bad.append(f"{entry['path']} missing")
                continue
            try:
                sha256, _size, count = file_sha256(fs, path)
            except (OSError, pa.ArrowException):
                bad.append(f"{entry['path']} unreadable")
                continue
            if sha256 != entry["sha256"] or count != entry["rows"]:
                bad.append(f"{entry['path']} changed")
                continue
            rows += count
            paths.append(path)
        exported = exported_ids(paths, spec, fs)
        database = await store.live_ids(spec)
        found.append(
            Reconciliation(
                spec.name,
                len(listed),
                tuple(bad),
                rows,
                sum(int(e["rows"]) for e in listed),
                len(exported),
                len(database),
                ids_checksum(exported),
                ids_checksum(database),
            )
        )
    return found
