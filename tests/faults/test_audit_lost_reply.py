"""The audit log's retried write after a commit whose reply was lost: every entry stored
once.

Found by an outside check through a proxy that forwarded COMMIT after the COPY and then
dropped both sockets: one read left two audit rows. Here the same through a proxy of
the test's own (tests/faults/lost_reply.py) in front of a fresh Postgres database; and,
on both backends, a commit made to fail after it went through: SQLite's commit has no
reply to lose, but a flush whose task is cancelled while the driver's thread commits
keeps its batch all the same, and writes it again.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import cast

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import downgrade, upgrade
from gateway.db.models import AuditEntry
from gateway.errors import DatabaseUnavailable
from gateway.privacy.audit import Action, AuditLog
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.faults.lost_reply import LostReply
from tests.own_database import run_sql

ENTRIES = 50


@pytest.fixture
def own_postgres() -> Iterator[str]:
    """A fresh, migrated Postgres database (named so, the test is marked ``postgres``)."""
    url = create_postgres_database("gateway_lost_reply")
    try:
        upgrade(url)
        yield url
    finally:
        drop_postgres_database(url)


def _record(log: AuditLog, actor: str, customers: int) -> None:
    log.record(
        actor=actor,
        key_id="key-1",
        action=Action.READ,
        operation="customer",
        customer_ids=[uuid.uuid4() for _ in range(customers)],
    )


async def _stored(engine: AsyncEngine, actor: str) -> tuple[int, int]:
    """(rows, distinct entry ids) of ``actor``."""
    async with engine.connect() as connection:
        query = select(func.count(), func.count(AuditEntry.entry_id.distinct())).where(
            AuditEntry.actor == actor
        )
        rows, ids = (await connection.execute(query)).one()
        return int(rows), int(ids)


@asynccontextmanager
async def _through(url: str) -> AsyncIterator[tuple[LostReply, AsyncEngine]]:
    """A proxy in front of ``url``'s server, and an engine connecting through it."""
    target = make_url(url)
    async with LostReply.started(target.host or "127.0.0.1", target.port or 5432) as proxy:
        engine = create_engine(
            target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        )
        try:
            yield proxy, engine
        finally:
            await engine.dispose()


async def test_a_commit_whose_reply_was_lost_is_not_written_twice(own_postgres: str) -> None:
    actor = f"lost-reply-{uuid.uuid4().hex[:8]}"
    direct = create_engine(own_postgres)
    try:
        async with _through(own_postgres) as (proxy, engine):
            log = AuditLog(create_sessionmaker(engine), flush_interval_s=3600)
            _record(log, actor, ENTRIES)
            proxy.lose_next_commit_after_copy()
            await log.flush()  # COPY, COMMIT forwarded, its reply lost: kept for a retry
            assert proxy.cuts == 1
            assert log._buffer.rows == ENTRIES
            assert (await _stored(direct, actor))[0] == ENTRIES  # committed all the same

            _record(log, actor, 1)  # queued meanwhile: written by the retry
            await log.flush()
            assert log._buffer.rows == 0
            assert await _stored(direct, actor) == (ENTRIES + 1, ENTRIES + 1)
            await log.aclose()
    finally:
        await direct.dispose()


class _LosingReplies:
    """Sessions as the log opens them, whose first ``times`` writes fail once they have
    committed."""

    def __init__(self, engine: AsyncEngine, times: int) -> None:
        self._sessions = create_sessionmaker(engine)
        self._left = times

    def __call__(self) -> AsyncSession:
        return self._sessions()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions.begin() as session:
            yield session
        if self._left:
            self._left -= 1
            raise DatabaseUnavailable("the commit's reply was lost")


async def test_a_batch_retried_after_its_commit_stores_each_entry_once(database_url: str) -> None:
    actor = f"retried-{uuid.uuid4().hex[:8]}"
    engine = create_engine(database_url)
    try:
        sessions = cast(async_sessionmaker[AsyncSession], _LosingReplies(engine, 1))
        log = AuditLog(sessions, flush_interval_s=3600)
        _record(log, actor, ENTRIES)
        await log.flush()
        assert log._buffer.rows == ENTRIES  # kept for a retry, though stored
        assert (await _stored(engine, actor))[0] == ENTRIES

        _record(log, actor, 1)
        await log.flush()
        assert log._buffer.rows == 0
        assert await _stored(engine, actor) == (ENTRIES + 1, ENTRIES + 1)
        await log.aclose()
    finally:
        await engine.dispose()


def test_0031_runs_again_after_its_index_build_failed(own_postgres: str) -> None:
    # A fresh review: the concurrent build runs after the column is committed, so a build
    # that failed (or was cancelled) left the column and revision 0030, and running the
    # upgrade again refused "column entry_id already exists".
    downgrade(own_postgres, "0030")
    run_sql(own_postgres, text("ALTER TABLE audit_log ADD COLUMN entry_id UUID"))
    upgrade(own_postgres)
    indexed = run_sql(
        own_postgres,
        text(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ux_audit_log_entry_id'::regclass"
        ),
    )
    assert [row[0] for row in indexed] == [True]
