"""Parquet files in a folder or object store, never seen half written.

A file is written under ``<name>.tmp`` and renamed when it is closed, so a reader (or a
resumed run) never takes a partial file for a complete one; its SHA-256 is computed as
the bytes go out.  Files are laid out as ``<table>/day=YYYY-MM-DD/<run>-<n>.parquet``
(hive partitioning, what Snowflake, BigQuery and DuckDB external tables read), the day
being that of ``changed_at``.  Paths go through pyarrow's filesystems: a local folder,
``file://``, ``s3://``/``gs://`` for real deployments (a rename there is a copy), or
any fsspec URL (``memory://`` in the tests, ``abfs://`` with adlfs…).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TMP = ".tmp"
# Columns of a few distinct values, dictionary-encoded.  The others (ids, times, hashes,
# JSON) are mostly distinct: a dictionary there costs time and, under zstd, bytes.
DICTIONARY = frozenset({"_op", "_run", "source", "type", "purpose", "name", "rule", "locale"})
# Columns whose min and max help no reader skip a row group (and would copy whole JSON
# documents into the footer): no statistics.
UNSORTED = frozenset({"properties"})


def filesystem(target: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the root path inside it of a folder or URL: pyarrow's own
    (local, s3, gs, hdfs), else any fsspec filesystem installed (memory, abfs, …).
    ValueError when no filesystem opens it."""
    if "://" not in target:
        return pafs.LocalFileSystem(), Path(target).resolve().as_posix()
    try:
        fs, root = pafs.FileSystem.from_uri(target)
        return fs, root.rstrip("/")
    except pa.ArrowInvalid:
        pass  # not one of pyarrow's: fsspec may know the scheme
    try:
        spec_fs, spec_root = fsspec.core.url_to_fs(target)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"no filesystem opens {target}: {exc}") from None
    # pyarrow's move on an fsspec filesystem is fsspec's ``mv``: on an object store a
    # copy, then a delete of the source. The final name appears whole or not at all,
    # and only files a manifest lists count, so the non-atomic move is safe here.
    return pafs.PyFileSystem(pafs.FSSpecHandler(spec_fs)), str(spec_root).rstrip("/")


class _Hashing:
    """A writable file that hashes what passes through it."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self.size += len(view)
        self._stream.write(data)
        return len(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._stream.flush()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
            self.closed = True


@dataclass(frozen=True, slots=True)
class WrittenFile:
    path: str  # relative to the target's root
    rows: int
    upserts: int
    deletes: int
    sha256: str
    bytes: int


class _OpenFile:
    def __init__(self, fs: pafs.FileSystem, root: str, path: str, schema: pa.Schema) -> None:
        self.path = path
        self._final = f"{root}/{path}"
        self._fs = fs
        fs.create_dir(self._final.rsplit("/", 1)[0], recursive=True)
        self._out = _Hashing(fs.open_output_stream(self._final + TMP))
        self._writer = pq.ParquetWriter(
            self._out,
            schema,
            compression="zstd",
            use_dictionary=[n for n in schema.names if n in DICTIONARY],
            write_statistics=[n for n in schema.names if n not in UNSORTED],
        )
        self.rows = 0
        self.deletes = 0

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)
        self.rows += table.num_rows
        self.deletes += pc.sum(pc.equal(table.column("_op"), "delete")).as_py() or 0

    def close(self) -> WrittenFile:
        self._writer.close()
        self._out.close()
        self._fs.move(self._final + TMP, self._final)
        return WrittenFile(
            self.path,
            self.rows,
            self.rows - self.deletes,
            self.deletes,
            self._out.sha256.hexdigest(),
            self._out.size,
        )


class TableWriter:
    """One table's files of one run: one per day partition, split at ``max_rows``.

    Rows are gathered per day and written ``ROW_GROUP`` at a time: a batch of the
    events spans every day of the window, and writing each day's few hundred rows as
    they come made thousands of tiny row groups (slow to write, slower to read).
    """

    ROW_GROUP = 128_000
    # Rows held in memory across all days before the largest day is written out.
    MAX_BUFFERED = 1_000_000

    def __init__(
        self,
        fs: pafs.FileSystem,
        root: str,
        table: str,
        run_id: str,
        schema: pa.Schema,
        max_rows: int = 5_000_000,
    ) -> None:
        self._fs, self._root, self._table, self._run = fs, root, table, run_id
        self._schema = schema
        self._max_rows = max_rows
        self._open: dict[str, _OpenFile] = {}
        self._pending: dict[str, list[pa.Table]] = {}
        self._pending_rows: dict[str, int] = {}
        self._buffered = 0
        self._count = 0
        self.files: list[WrittenFile] = []

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        table = table.select(self._schema.names).cast(self._schema)
        days = pc.cast(table.column("changed_at").combine_chunks(), pa.date32())
        bounds = pc.min_max(days)
        if bounds["min"] == bounds["max"]:
            self._add(days[0].as_py().isoformat(), table)
        else:
            # Sorted by day, each day is one slice (no filter pass per day).
            order = pc.sort_indices(days)
            table, days = table.take(order), days.take(order)
            runs = pc.run_end_encode(days)
            start = 0
            for day, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist(), strict=True):
                self._add(day.isoformat(), table.slice(start, end - start))
                start = end
        while self._buffered > self.MAX_BUFFERED:
            self._flush(max(self._pending_rows, key=self._pending_rows.__getitem__))

    def _add(self, day: str, part: pa.Table) -> None:
        self._pending.setdefault(day, []).append(part)
        self._pending_rows[day] = self._pending_rows.get(day, 0) + part.num_rows
        self._buffered += part.num_rows
        if self._pending_rows[day] >= self.ROW_GROUP:
            self._flush(day)

    def _flush(self, day: str) -> None:
        parts = self._pending.pop(day, [])
        self._buffered -= self._pending_rows.pop(day, 0)
        if not parts:
            return
        self._file(day).write(pa.concat_tables(parts).combine_chunks())
        if self._open[day].rows >= self._max_rows:
            self.files.append(self._open.pop(day).close())

    def _file(self, day: str) -> _OpenFile:
        if day not in self._open:
            self._count += 1
            path = f"{self._table}/day={day}/{self._run}-{self._count:04d}.parquet"
            self._open[day] = _OpenFile(self._fs, self._root, path, self._schema)
        return self._open[day]

    def close(self) -> list[WrittenFile]:
        for day in sorted(self._pending):
            self._flush(day)
        for day in sorted(self._open):
            self.files.append(self._open.pop(day).close())
        return sorted(self.files, key=lambda f: f.path)


def remove_run_files(
    fs: pafs.FileSystem, root: str, table: str, run_id: str, *, partial_only: bool = False
) -> int:
    """Delete whatever an interrupted attempt of this run left for ``table`` (only its
    half-written files, for a table it had finished)."""
    selector = pafs.FileSelector(f"{root}/{table}", recursive=True, allow_not_found=True)
    removed = 0
    for info in fs.get_file_info(selector):
        mine = info.type == pafs.FileType.File and info.base_name.startswith(f"{run_id}-")
        if mine and (info.base_name.endswith(TMP) or not partial_only):
            fs.delete_file(info.path)
            removed += 1
    return removed


def file_sha256(fs: pafs.FileSystem, path: str) -> tuple[str, int, int]:
    """SHA-256, size and Parquet row count of a stored file."""
    digest = hashlib.sha256()
    size = 0
    with fs.open_input_stream(path) as stream:
        while chunk := stream.read(8 << 20):
            digest.update(chunk)
            size += len(chunk)
    with fs.open_input_file(path) as handle:
        rows = pq.ParquetFile(handle).metadata.num_rows
    return digest.hexdigest(), size, rows
