"""The buffered audit log: a shutdown while a write is under way loses no entries."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import AuditEntry
from gateway.privacy.audit import Action, AuditLog


@asynccontextmanager
async def _table_locked(engine: AsyncEngine) -> AsyncIterator[None]:
    """Another writer holds audit_log until the block ends: the log's write waits."""
    async with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text("BEGIN"))
            await connection.execute(text("LOCK TABLE audit_log IN EXCLUSIVE MODE"))
        else:
            await connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            await connection.rollback()


async def _writing(log: AuditLog) -> None:
    """Until the periodic write has started (it holds the log's lock while it writes)."""
    while not log._buffer.writing:  # noqa: ASYNC110 (a lock has no event to wait on)
        await asyncio.sleep(0.005)


async def _count(engine: AsyncEngine, actor: str) -> int:
    async with engine.connect() as connection:
        found = await connection.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.actor == actor)
        )
        return int(found or 0)


async def test_closing_while_a_write_is_under_way_loses_no_entries(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        log = AuditLog(create_sessionmaker(engine), flush_interval_s=0.01)
        actor = f"closing-{uuid.uuid4().hex[:8]}"
        async with _table_locked(engine):
            log.record(
                actor=actor,
                key_id=None,
                action=Action.READ,
                operation="customer",
                customer_ids=[uuid.uuid4() for _ in range(50)],
            )
            await asyncio.wait_for(_writing(log), timeout=5)
            await asyncio.sleep(0.05)  # into the INSERT, which waits on the other writer
            closing = asyncio.create_task(log.aclose())
            await asyncio.sleep(0.05)
            log.record(  # recorded during shutdown: written by the final flush
                actor=actor,
                key_id=None,
                action=Action.READ,
                operation="customer",
                customer_ids=[uuid.uuid4()],
            )
        await asyncio.wait_for(closing, timeout=10)
        assert await _count(engine, actor) == 51
    finally:
        await engine.dispose()


async def test_a_flush_larger_than_one_statement_writes_every_entry(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        log = AuditLog(create_sessionmaker(engine), flush_interval_s=60)
        actor = f"bulk-{uuid.uuid4().hex[:8]}"
        customers = [uuid.uuid4() for _ in range(1_001)]  # five statements and one row
        log.record(
            actor=actor,
            key_id="k1",
            action=Action.READ,
            operation="customers",
            customer_ids=customers,
        )
        await log.aclose()
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(AuditEntry.customer_id, AuditEntry.details).where(
                        AuditEntry.actor == actor
                    )
                )
            ).all()
        assert sorted(r.customer_id for r in rows) == sorted(customers)
        assert {(r.details["action"], r.details["key_id"]) for r in rows} == {("read", "k1")}
    finally:
        await engine.dispose()


async def _busy_loop(stop: asyncio.Event) -> None:
    """The event loop of a worker under load: a turn of the loop runs many requests'
    steps, ~10 ms of Python holding the GIL between the loop's polls."""
    while not stop.is_set():
        until = time.perf_counter() + 0.01
        while time.perf_counter() < until:
            pass
        await asyncio.sleep(0)


async def test_a_flush_under_a_busy_loop_holds_the_database_briefly(database_url: str) -> None:
    """On SQLite an executemany was a trip to the driver's thread per row, each waiting
    for the busy loop: 3,000 entries held SQLite's one write lock for seconds, so the
    other writers (the other worker's audit and impressions) ran past their busy
    timeout and dropped rows. A flush is a few statements now."""
    engine = create_engine(database_url)
    stop = asyncio.Event()
    busy = asyncio.create_task(_busy_loop(stop))
    try:
        log = AuditLog(create_sessionmaker(engine), flush_interval_s=60)
        actor = f"busy-{uuid.uuid4().hex[:8]}"
        log.record(
            actor=actor,
            key_id=None,
            action=Action.READ,
            operation="customers",
            customer_ids=[uuid.uuid4() for _ in range(3_000)],
        )
        started = time.perf_counter()
        await log.flush()
        took = time.perf_counter() - started
        assert await _count(engine, actor) == 3_000
        # The old way waited up to a switch interval (5 ms) a row: seconds; now two statements.
        assert took < 3.0, f"a flush of 3,000 entries under load took {took:.1f} s"
    finally:
        stop.set()
        await busy
        await engine.dispose()
