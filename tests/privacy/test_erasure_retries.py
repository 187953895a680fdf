"""An erasure is run again after a transient failure, as the other writers are: chosen
as a deadlock's victim on Postgres, or kept out of SQLite past its busy timeout by
another writer. Before, the person who asked to be forgotten got an error and stayed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Customer
from gateway.db.retries import RetryPolicy
from gateway.errors import Conflict
from gateway.identity.config import DEFAULT_CONFIG
from gateway.identity.linkage.resolution import _LOCK_NAMESPACE, key_stripe
from gateway.privacy.erasure import Erasure
from gateway.privacy.erasure_scope import linker_keys
from gateway.privacy.tombstones import Tombstones
from tests.privacy.test_erasure_race import Known, _known

# Sessions of this database waiting on a row.
_ON_A_ROW = text(
    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE NOT l.granted AND a.datname = current_database()"
    " AND l.locktype IN ('transactionid', 'tuple')"
)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def _forget(sessions: async_sessionmaker[AsyncSession], known: Known) -> Any:
    return Erasure(sessions, Tombstones(known.key)).forget(known.customer_id)


async def _stored(engine: AsyncEngine, known: Known) -> int:
    async with engine.connect() as connection:
        query = select(func.count()).select_from(Customer).where(Customer.id == known.customer_id)
        return int(await connection.scalar(query) or 0)


async def test_an_erasure_chosen_as_a_deadlocks_victim_is_run_again(
    engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The erasure holds the customer's linker keys and waits for the customer's row; the
    transaction holding that row then asks for one of those keys. Postgres breaks the
    cycle by failing the erasure (it waited first, so its check finds the cycle first);
    run again once the other lets go, it forgets the customer."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer: no deadlock between two")
    sessions = create_sessionmaker(engine)
    known = await _known(sessions, tmp_path)
    async with sessions() as session:
        keys = await linker_keys(session, known.customer_id, DEFAULT_CONFIG)
    stripe = key_stripe(min(keys))
    async with engine.connect() as holder:
        # Only the erasure looks for the cycle in time: it is the one failed.
        await holder.execute(text("SET LOCAL deadlock_timeout = '30s'"))
        row = select(Customer.id).where(Customer.id == known.customer_id).with_for_update()
        await holder.execute(row)
        erasure = asyncio.create_task(
            Erasure(sessions, Tombstones(known.key)).forget(known.customer_id)
        )
        await _until_on_a_row(engine, erasure)
        taking = text("SELECT pg_advisory_xact_lock(:namespace, :stripe)")
        await holder.execute(taking, {"namespace": _LOCK_NAMESPACE, "stripe": stripe})
        await holder.rollback()
    erased = await asyncio.wait_for(erasure, 30)
    assert erased is not None
    assert erased.customer_id == known.customer_id
    assert await _stored(engine, known) == 0
    retried = [
        (getattr(r, "operation", None), getattr(r, "reason", None))
        for r in caplog.records
        if r.getMessage() == "transaction retried"
    ]
    assert ("erasure", "deadlock") in retried  # the cycle was real, and broken on it


async def _until_on_a_row(engine: AsyncEngine, task: asyncio.Task[Any]) -> None:
    deadline = time.monotonic() + 20
    async with engine.connect() as watcher:
        while time.monotonic() < deadline and not task.done():
            if await watcher.scalar(_ON_A_ROW):
                return
            await watcher.rollback()  # a fresh snapshot of the views each time
            await asyncio.sleep(0.02)
    raise AssertionError(f"the erasure never waited on the customer's row ({task})")


async def test_an_erasure_outlasts_a_writer_holding_sqlite_past_its_busy_timeout(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """Another writer holds SQLite's write lock for 6 s, past the 5 s each statement
    waits: the erasure is still waiting when it lets go, then forgets the customer."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's busy timeout")
    sessions = create_sessionmaker(engine)
    known = await _known(sessions, tmp_path)
    async with engine.connect() as holder:
        await holder.exec_driver_sql("BEGIN IMMEDIATE")
        erasure = asyncio.create_task(
            Erasure(sessions, Tombstones(known.key)).forget(known.customer_id)
        )
        done, _ = await asyncio.wait([erasure], timeout=6)
        assert not done, erasure.exception()
        await holder.rollback()
    erased = await asyncio.wait_for(erasure, 30)
    assert erased is not None
    assert await _stored(engine, known) == 0


async def test_an_erasure_whose_retries_run_out_answers_conflict_and_erases_nothing(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """One attempt allowed, and another writer holds SQLite past it: the erasure answers
    ``Conflict`` (try again), not the database's error, and the customer is still there."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's busy timeout")
    sessions = create_sessionmaker(engine)
    known = await _known(sessions, tmp_path)
    erasure = Erasure(sessions, Tombstones(known.key), retry=RetryPolicy(attempts=1))
    async with engine.connect() as holder:
        await holder.exec_driver_sql("BEGIN IMMEDIATE")
        with pytest.raises(Conflict, match="try again"):
            await erasure.forget(known.customer_id)
        await holder.rollback()
    assert await _stored(engine, known) == 1
