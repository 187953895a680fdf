"""An import killed with SIGKILL mid-run, then run again, stores what one clean run stores:
each attribute observation once, each customer and identity once."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.db.models import Attribute, Customer, Identity
from gateway.ingest.importer import import_file
from tests.conftest import REPO, create_postgres_database, drop_postgres_database

ROWS = 2000
BATCH = 100
KILL_AFTER_BATCHES = 3


@pytest.fixture(params=["postgres", "sqlite"])
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """A factory of empty, migrated databases on one backend."""
    made: list[str] = []

    def make() -> str:
        if request.param == "postgres":
            url = create_postgres_database("gateway_import")
        else:
            url = f"sqlite+aiosqlite:///{tmp_path / f'import{len(made)}.db'}"
        made.append(url)
        upgrade(url)
        return url

    yield make
    for url in made:
        if url.startswith("postgresql"):
            drop_postgres_database(url)


def _write_records(path: Path) -> None:
    """People seen more than once (shared e-mails link rows), half the rows with their own
    time of observation and half without (observed when the file was written)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["external_id", "email", "first_name", "last_name", "city", "observed_at"])
        for row in range(ROWS):
            person = row % (ROWS // 2)
            observed = f"2026-0{1 + row % 9}-1{row % 10}T08:00:00+00:00" if row % 2 else ""
            writer.writerow(
                [f"r{row}", f"person{person}@example.com", "Ada", f"Name{person}", "Lyon", observed]
            )


def _import_until_killed(url: str, path: Path) -> None:
    """``gateway import`` in a process of its own, killed (SIGKILL) once a few batches
    have committed (it reports each committed batch on stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    command = [sys.executable, "-m", "gateway", "import", str(path), "--source", "crm"]
    process = subprocess.Popen(
        [*command, "--batch-size", str(BATCH), "--database-url", url],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    committed = 0
    for line in process.stderr:
        committed += " read, " in line
        if committed == KILL_AFTER_BATCHES:
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL, "the import finished before it was killed"


async def _import(url: str, path: Path) -> None:
    engine = create_engine(url)
    try:
        await import_file(create_sessionmaker(engine), path, "crm", batch_size=BATCH)
    finally:
        await engine.dispose()


async def _counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return {
                model.__tablename__: int(
                    await connection.scalar(select(func.count()).select_from(model)) or 0
                )
                for model in (Customer, Identity, Attribute)
            }
    finally:
        await engine.dispose()


def test_an_import_killed_mid_run_and_rerun_stores_what_one_clean_run_stores(
    fresh_database: Callable[[], str], tmp_path: Path
) -> None:
    path = tmp_path / "records.csv"
    _write_records(path)
    clean, crashed = fresh_database(), fresh_database()
    asyncio.run(_import(clean, path))
    expected = asyncio.run(_counts(clean))
    assert expected["identities"] == ROWS

    _import_until_killed(crashed, path)
    partial = asyncio.run(_counts(crashed))
    # Whole batches only, and not all of them.
    assert 0 < partial["identities"] < ROWS
    assert partial["identities"] % BATCH == 0
    asyncio.run(_import(crashed, path))
    assert asyncio.run(_counts(crashed)) == expected
    asyncio.run(_import(crashed, path))  # and a third time, for good measure
    assert asyncio.run(_counts(crashed)) == expected
