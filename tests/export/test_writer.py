"""The writer's day partitions: every row in the file of its day, in few row groups even
when each batch spans many days (as the events' batches do)."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.export.writer import TableWriter

SCHEMA = pa.schema(
    [("id", pa.int64()), ("changed_at", pa.timestamp("us", tz="UTC")), ("_op", pa.string())]
)
START = datetime(2026, 1, 1, tzinfo=UTC)


def _batch(first: int, days: list[int]) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(first, first + len(days)), pa.int64()),
            "changed_at": pa.array(
                [START + timedelta(days=d, seconds=i) for i, d in enumerate(days)],
                SCHEMA.field("changed_at").type,
            ),
            "_op": pa.array(["upsert"] * len(days)),
        }
    )


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(0, 40), min_size=1, max_size=60), min_size=1, max_size=12))
def test_every_row_lands_in_the_file_of_its_day(batches: list[list[int]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder).as_posix()
        writer = TableWriter(pafs.LocalFileSystem(), root, "events", "r1", SCHEMA)
        first = 0
        for days in batches:
            writer.write(_batch(first, days))
            first += len(days)
        files = writer.close()
        expected: dict[str, int] = {}
        for days in batches:
            for d in days:
                day = (START + timedelta(days=d)).date().isoformat()
                expected[day] = expected.get(day, 0) + 1
        found: dict[str, int] = {}
        ids: list[int] = []
        for written in files:
            day = written.path.split("/")[1].removeprefix("day=")
            table = pq.read_table(f"{root}/{written.path}")
            assert {t.date().isoformat() for t in table.column("changed_at").to_pylist()} == {day}
            found[day] = found.get(day, 0) + table.num_rows
            ids += table.column("id").to_pylist()
            # Gathered per day: one row group for these few rows, not one per batch.
            assert pq.ParquetFile(f"{root}/{written.path}").metadata.num_row_groups == 1
        assert found == expected
        assert sorted(ids) == list(range(first))
