"""Exports read back with DuckDB and pyarrow: counts and checksums equal to the database,
incremental runs after inserts, updates, merges, erasures and consent withdrawals, a
run that died resumed, and the DuckDB warehouse's views."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_sessionmaker
from gateway.db.models import Consent, Customer, Event, utcnow
from gateway.export.pseudonymise import Pseudonymiser
from gateway.export.service import ExportBusy, Exporter, ExportError, ExportReport
from gateway.export.store import ExportStore
from gateway.export.verify import reconcile
from gateway.export.warehouse import load
from gateway.identity import merge_customers
from gateway.privacy.erasure import Erasure
from gateway.privacy.tombstones import Tombstones
from tests.export.people import add_person

KEY = b"export-test-key-0123456789"


async def _exported_and_reconciled(engine: AsyncEngine, out: Path) -> None:
    found = await reconcile(str(out), ExportStore(engine))
    assert [r.line() for r in found if not r.ok] == []


def _run_rows(out: Path, report: ExportReport, table: str) -> list[dict[str, Any]]:
    """The rows one run wrote for one table, read back with pyarrow."""
    rows: list[dict[str, Any]] = []
    for result in report.tables:
        if result.table == table:
            for written in result.files:
                rows += pq.read_table(out / written.path).to_pylist()
    return rows


def _manifest_files(out: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted((out / "_manifests").glob("*.json")):
        manifest = json.loads(path.read_text())
        for table in manifest["tables"].values():
            found += table["files"]
    return found


async def test_files_match_manifest_and_database(engine: AsyncEngine, tmp_path: Path) -> None:
    people = [await add_person(engine) for _ in range(3)]
    await add_person(engine, analytics=False)
    out = tmp_path / "out"
    report = await Exporter(engine, str(out), Pseudonymiser(KEY)).run()
    # Every file: the checksum and row count the manifest recorded (pyarrow reads it).
    for entry in _manifest_files(out):
        data = (out / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert pq.ParquetFile(out / entry["path"]).metadata.num_rows == entry["rows"]
    # The database's counts, read with DuckDB's own queries over the files.
    async with engine.connect() as connection:
        customers = await connection.scalar(select(func.count()).select_from(Customer))
        consented = await connection.scalar(
            select(func.count())
            .select_from(Event)
            .where(
                Event.customer_id.in_(
                    select(Consent.customer_id).where(
                        Consent.purpose == "analytics", Consent.granted.is_(True)
                    )
                )
            )
        )
    glob = str(out / "{}" / "**" / "*.parquet")
    assert count_rows(glob.format("customers")) == customers
    assert consented == 3 * len(people)
    # The customer without analytics consent is left out (their events are deletions).
    assert count_rows(glob.format("events"), "_op = 'upsert'") == consented
    assert report.rows == sum(e["rows"] for e in _manifest_files(out))
    await _exported_and_reconciled(engine, out)


async def test_incremental_after_inserts_updates_merges_and_erasures(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    a, b, c = [await add_person(engine) for _ in range(3)]
    out = tmp_path / "out"
    exporter = Exporter(engine, str(out), None)  # raw: the erased person's data is visible
    await exporter.run()
    await _exported_and_reconciled(engine, out)

    sessions = create_sessionmaker(engine)
    d = await add_person(engine)
    async with engine.begin() as connection:
        await connection.execute(update(Customer).where(Customer.id == a.id).values(locale="fr"))
    await merge_customers(sessions, a.id, b.id, "same person")
    erased = await Erasure(sessions, Tombstones(b"erasure-key-for-tests")).forget(c.id)
    assert erased is not None
    second = await exporter.run()
    await _exported_and_reconciled(engine, out)

    customers = {(r["id"], r["_op"]): r for r in _run_rows(out, second, "customers")}
    assert set(customers) == {
        (str(a.id), "upsert"),
        (str(b.id), "delete"),
        (str(c.id), "delete"),
        (str(d.id), "upsert"),
    }
    assert customers[(str(a.id), "upsert")]["locale"] == "fr"
    moved = [r for r in _run_rows(out, second, "events") if r["_op"] == "upsert"]
    assert {r["customer_id"] for r in moved} == {str(a.id), str(d.id)}  # b's moved to a
    # The erased customer: deletions only, and nothing of theirs in the run's files.
    for table in ("customers", "identities", "events", "attributes", "consents"):
        for row in _run_rows(out, second, table):
            if c.id.hex in json.dumps(row, default=str).replace("-", ""):
                assert row["_op"] == "delete", (table, row)
    for result in second.tables:
        for written in result.files:
            data = (out / written.path).read_bytes()
            assert c.email.encode() not in data
            text = json.dumps(pq.read_table(out / written.path).to_pylist(), default=str)
            for value in (c.email, c.first_name, c.last_name, c.external_id):
                assert value not in text

    # A withdrawn analytics consent: their events leave the export as deletions.
    async with engine.begin() as connection:
        await connection.execute(
            update(Consent)
            .where(Consent.customer_id == d.id, Consent.purpose == "analytics")
            .values(granted=False)
        )
    third = await exporter.run()
    withdrawn = _run_rows(out, third, "events")
    assert len(withdrawn) == 3
    assert {r["_op"] for r in withdrawn} == {"delete"}
    await _exported_and_reconciled(engine, out)
    # Nothing changed: a run writes no rows at all.
    assert (await exporter.run()).rows == 0


class _Killed(Exception):
    pass


async def test_a_run_killed_midway_is_resumed_whole(engine: AsyncEngine, tmp_path: Path) -> None:
    for _ in range(3):
        await add_person(engine)
    out = tmp_path / "out"
    finished: list[str] = []

    def die_after_two(stage: str) -> None:
        finished.append(stage)
        if len(finished) == 2:
            raise _Killed(stage)

    with pytest.raises(_Killed):
        await Exporter(engine, str(out), Pseudonymiser(KEY), checkpoint=die_after_two).run()
    assert not (out / "_manifests").exists()
    # As a kill in the middle of writing a file leaves it: a partial file under its
    # temporary name, for a table the dead run had not finished.
    run_id = next((out / "_runs").iterdir()).name
    partial = out / "events" / "day=2026-01-01" / f"{run_id}-0001.parquet.tmp"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"PAR1 half a file")
    await add_person(engine)  # written meanwhile: the next run's, not the resumed one's

    resumed = await Exporter(engine, str(out), Pseudonymiser(KEY)).run()
    assert resumed.resumed
    assert resumed.run_id == run_id
    assert not partial.exists()
    assert list(out.rglob("*.tmp")) == []
    assert len(list((out / "_manifests").glob("*.json"))) == 1
    following = await Exporter(engine, str(out), Pseudonymiser(KEY)).run()
    assert not following.resumed
    assert 0 < following.rows < resumed.rows
    await _exported_and_reconciled(engine, out)


async def test_duckdb_warehouse_views(engine: AsyncEngine, tmp_path: Path) -> None:
    people = [await add_person(engine) for _ in range(2)]
    silent = await add_person(engine, analytics=False)
    out = tmp_path / "out"
    await Exporter(engine, str(out), Pseudonymiser(KEY)).run()
    counts = load(str(out), tmp_path / "w.duckdb")
    assert counts["customers"] == 3
    assert counts["events"] == 6
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as db:
        activity = dict(db.execute("SELECT customer_id, orders FROM customer_activity").fetchall())
        assert activity == {**{str(p.id): 1 for p in people}, str(silent.id): 0}
        consents = dict(db.execute("SELECT id, analytics FROM customer_consents").fetchall())
        assert consents[str(silent.id)] is False
        daily = db.execute("SELECT sum(events), sum(orders) FROM engagement_daily").fetchone()
        assert daily == (6, 2)


async def test_a_row_committed_after_a_run_began_is_in_the_next_run(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """Postgres stamps a row with its transaction's start: a transaction open while an
    export runs commits rows stamped before the export's window end, which the window
    must leave for the next run rather than skip for ever."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite takes the write lock to end a window: no writer is half way")
    await add_person(engine)
    out = tmp_path / "out"
    exporter = Exporter(engine, str(out), Pseudonymiser(KEY))
    async with engine.connect() as late:
        await late.execute(
            Customer.__table__.insert(),  # type: ignore[attr-defined]
            [
                {
                    "id": uuid.uuid4(),
                    "locale": "late",
                    "created_at": utcnow(),
                    "updated_at": utcnow(),
                }
            ],
        )
        first = await exporter.run()  # the writer is still open
        await late.commit()
    assert "late" not in {r["locale"] for r in _run_rows(out, first, "customers")}
    second = await exporter.run()
    assert [r["locale"] for r in _run_rows(out, second, "customers")] == ["late"]
    await _exported_and_reconciled(engine, out)


_DIES_WRITING_EVENTS = """
import asyncio, os, signal, sys
from gateway.db.engine import create_engine
from gateway.export import writer
from gateway.export.pseudonymise import Pseudonymiser
from gateway.export.service import Exporter

written = writer._OpenFile.write

def write_then_die(self, table):
    written(self, table)
    if self.path.startswith("events/"):  # half way through a file: killed, no clean-up
        os.kill(os.getpid(), signal.SIGKILL)

writer._OpenFile.write = write_then_die

async def main():
    engine = create_engine(sys.argv[1])
    await Exporter(engine, sys.argv[2], Pseudonymiser(sys.argv[3].encode())).run()

asyncio.run(main())
"""


async def test_a_killed_process_is_resumed_whole(
    engine: AsyncEngine, own_database_url: str, tmp_path: Path
) -> None:
    for _ in range(2):
        await add_person(engine)
    out = tmp_path / "out"
    killed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _DIES_WRITING_EVENTS,
        own_database_url,
        str(out),
        KEY.decode(),
        cwd=Path(__file__).parents[2],
    )
    assert await killed.wait() == -signal.SIGKILL
    assert list(out.glob("events/**/*.parquet.tmp"))  # the file it was writing
    assert not (out / "_manifests").exists()

    # Postgres ends the killed process's session (and its lock on the folder) once it
    # reads the closed socket, a moment later on a busy machine: until then a run says
    # the folder is busy, as it should, and the next scheduled run resumes.
    for _ in range(100):
        try:
            resumed = await Exporter(engine, str(out), Pseudonymiser(KEY)).run()
            break
        except ExportBusy:
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("the killed process's lock was never released")
    assert resumed.resumed
    assert list(out.rglob("*.tmp")) == []
    assert {t.table: t.as_json()["upserts"] for t in resumed.tables}["events"] == 6
    await _exported_and_reconciled(engine, out)


async def test_one_export_at_a_time_into_a_folder(engine: AsyncEngine, tmp_path: Path) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("a Postgres session lock; SQLite's embedded database has one operator")
    await add_person(engine)
    out = tmp_path / "out"
    first = Exporter(engine, str(out), Pseudonymiser(KEY))
    async with first._store.exclusive(first._key) as alone:  # a run under way elsewhere
        assert alone
        with pytest.raises(ExportError, match="another export"):
            await Exporter(engine, str(out), Pseudonymiser(KEY)).run()
    assert (await first.run()).rows > 0


def count_rows(files: str, where: str = "true") -> int:
    """Rows in the Parquet files a glob names, counted by DuckDB (a reader of our own)."""
    relation = duckdb.sql(f"SELECT count(*) FROM '{files}' WHERE {where}")
    assert relation is not None
    (count,) = relation.fetchall()[0]
    return int(count)
