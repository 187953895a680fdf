"""The buffered audit log: a shutdown while a write is under way loses no entries."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade_connection
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


async def test_an_entry_is_stored_as_the_orm_stores_one(database_url: str) -> None:
    """The log writes its entries without SQLAlchemy's per-value processors (on SQLite its
    raw values, made the stored forms in SQL): each column must hold what an ORM insert of the same
    entry holds (on SQLite the time's very text, which ``since`` compares), and read back
    the same."""
    engine = create_engine(database_url)
    try:
        sessions = create_sessionmaker(engine)
        log = AuditLog(sessions, flush_interval_s=60)
        actor = f"stored-{uuid.uuid4().hex[:8]}"
        customer = uuid.uuid4()
        log.record(
            actor=actor, key_id="k-7", action=Action.CHANGE, operation="op", customer_ids=[customer]
        )
        log.record(
            actor=actor, key_id=None, action=Action.EXPORT, operation="run", customer_ids=[None]
        )
        await log.flush()
        async with sessions() as session:
            logged = (
                await session.scalars(
                    select(AuditEntry).where(AuditEntry.actor == actor).order_by(AuditEntry.id)
                )
            ).all()
            assert [(e.customer_id, e.details) for e in logged] == [
                (customer, {"action": "change", "key_id": "k-7"}),
                (None, {"action": "export", "key_id": None}),
            ]
            moment = logged[0].occurred_at
            assert moment.tzinfo is not None
            assert abs((datetime.now(UTC) - moment).total_seconds()) < 60
            session.add(
                AuditEntry(
                    occurred_at=moment,
                    actor=f"{actor}-orm",
                    operation="op",
                    customer_id=customer,
                    details={"action": "change", "key_id": "k-7"},
                )
            )
            await session.commit()
            stored = (
                await session.execute(
                    select(
                        AuditEntry.actor,
                        text("CAST(occurred_at AS TEXT)"),
                        text("CAST(customer_id AS TEXT)"),
                    )
                    .where(
                        AuditEntry.actor.in_([actor, f"{actor}-orm"]), AuditEntry.operation == "op"
                    )
                    .order_by(AuditEntry.id)
                )
            ).all()
        assert stored[0][1:] == stored[1][1:]
        # The time read back is the one written: found by ``since`` at that very moment.
        found = await log.query(actor=actor, since=moment)
        assert [(r.action, r.key_id, r.customer_id) for r in found] == [
            ("export", None, None),
            ("change", "k-7", customer),
        ]
    finally:
        await engine.dispose()


async def test_an_entry_json_cannot_hold_is_kept_with_its_batch(database_url: str) -> None:
    """A lone surrogate in an entry (a key id here: text the SQLite driver cannot
    encode) must not fail the whole batch, retried every second until the buffer dropped
    it: it is written with "?" in its place, and the rest with it."""
    engine = create_engine(database_url)
    try:
        log = AuditLog(create_sessionmaker(engine), flush_interval_s=60)
        actor = f"odd-{uuid.uuid4().hex[:8]}"
        log.record(
            actor=actor, key_id="k\ud800", action=Action.READ, operation="op", customer_ids=[None]
        )
        log.record(
            actor=actor, key_id="k", action=Action.READ, operation="op", customer_ids=[uuid.uuid4()]
        )
        await log.aclose()
        found = await log.query(actor=actor)
        # Postgres's JSON keeps it escaped; SQLite's text has the "?".
        assert sorted(r.key_id or "" for r in found) in (["k", "k?"], ["k", "k\ud800"])
    finally:
        await engine.dispose()


async def test_a_batch_refused_late_for_its_text_is_written_once(database_url: str) -> None:
    """An entry the driver cannot encode, past the first statement (or COPY) of its batch:
    the batch is written again with "?" in its place, so what went before it must not
    have been kept (on Postgres each COPY committed on its own: 2,500 entries stored as
    4,500)."""
    engine = create_engine(database_url)
    try:
        log = AuditLog(create_sessionmaker(engine), flush_interval_s=60)
        actor = f"late-{uuid.uuid4().hex[:8]}"
        for n in range(2500):
            operation = "op\ud800" if n == 2400 else "op"  # a column of its own: COPY's too
            log.record(
                actor=actor,
                key_id="k",
                action=Action.READ,
                operation=operation,
                customer_ids=[None],
            )
        await log.aclose()
        found = await log.query(actor=actor, limit=10_000)
        assert len(found) == 2500
        assert [r.operation for r in found if r.operation != "op"] == ["op?"]
    finally:
        await engine.dispose()


async def test_a_queued_entry_is_nothing_the_garbage_collector_follows() -> None:
    """Every read queues an entry until the next write (a second of a saturated worker:
    thousands): entries the collector follows (a dict, a datetime, a UUID) made each young
    collection longer and more frequent under load."""
    log = AuditLog(create_sessionmaker(create_engine("sqlite+aiosqlite://")), flush_interval_s=60)
    log.record(
        actor="a", key_id="k", action=Action.READ, operation="op", customer_ids=[uuid.uuid4(), None]
    )
    gc.collect()
    try:
        assert [gc.is_tracked(entry) for entry in log._buffer._pending] == [False, False]
    finally:
        assert log._buffer._task is not None
        log._buffer._task.cancel()  # nothing to write them to


async def test_a_name_with_a_nul_is_stored_whole_on_sqlite(sqlite_url: str) -> None:
    """A key's name may hold a NUL on SQLite (Postgres refuses it when the key is made):
    stored whole, as the ORM stores it, not cut short (SQLite's json_extract, which read
    the entries out of one JSON array, ended the text there); the rest of its batch as
    usual."""
    engine = create_engine(sqlite_url)
    try:
        async with engine.begin() as connection:  # migrated, if no test did yet
            await upgrade_connection(connection)
        log = AuditLog(create_sessionmaker(engine), flush_interval_s=60)
        actor = f"nul-{uuid.uuid4().hex[:8]}"
        for name in (f"{actor}\x00x", actor, f"{actor}\x00\ud800"):
            log.record(
                actor=name, key_id="k\x00", action=Action.READ, operation="op", customer_ids=[None]
            )
        await log.aclose()
        found = await log.query(actor=f"{actor}\x00x")
        assert [(r.actor, r.key_id) for r in found] == [(f"{actor}\x00x", "k\x00")]
        assert len(await log.query(actor=actor)) == 1
        # With a lone surrogate too (the driver cannot encode it): kept, with "?".
        assert len(await log.query(actor=f"{actor}\x00?")) == 1
    finally:
        await engine.dispose()
