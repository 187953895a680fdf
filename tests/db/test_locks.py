"""The run lock: one run at a time; a run whose lock session was lost mid-way (a failover,
an idle timeout) takes the lock again and goes on, or is stopped when another run took
it meanwhile, and one whose session died at its very end still ends as it ran."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db.engine import create_engine
from gateway.db.locks import RunLockLost, lock_key, run_lock

# Advisory locks are per database, but pg_locks shows the whole cluster's: another test
# run's session on the same server (CI beside a developer's run) holds the same key in
# its own database, and was killed instead.
_THIS_DATABASE = "database = (SELECT oid FROM pg_database WHERE datname = current_database())"


async def test_a_second_taker_is_refused_while_a_run_holds_the_lock(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    other = create_engine(postgres_url)
    try:
        async with run_lock(engine, "lock-test-refused") as held:
            assert held
            async with run_lock(engine, "lock-test-refused") as again:
                assert not again  # in this process
            async with other.connect() as connection:
                key = lock_key("lock-test-refused")
                taken = await connection.scalar(text(f"SELECT pg_try_advisory_lock({key})"))
                assert taken is False  # nor in another session (another instance)
        async with run_lock(engine, "lock-test-refused") as after:
            assert after  # released when the run ended
    finally:
        await engine.dispose()
        await other.dispose()


async def test_a_run_whose_lock_session_died_ends_without_an_error(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(postgres_url)
    admin = create_engine(postgres_url)
    key = lock_key("lock-test-lost")
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.db.locks"):
            async with run_lock(engine, "lock-test-lost") as held:
                assert held
                async with admin.connect() as connection:
                    killed = await connection.scalar(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_locks "
                            f"WHERE locktype = 'advisory' AND {_THIS_DATABASE} AND "
                            "((classid::bigint << 32) | objid::bigint) = :key"
                        ),
                        {"key": key & 0xFFFFFFFFFFFFFFFF if key < 0 else key},
                    )
                    assert killed, "the lock's session was not found"
        assert "lost before the unlock" in caplog.text
        async with run_lock(engine, "lock-test-lost") as again:
            assert again  # the pool handed out a live connection, and the lock is free
    finally:
        await engine.dispose()
        await admin.dispose()


_HOLDER = (
    f"SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND {_THIS_DATABASE} "
    "AND ((classid::bigint << 32) | objid::bigint) = :key"
)


def _unsigned(key: int) -> int:
    return key & 0xFFFFFFFFFFFFFFFF if key < 0 else key


async def _holder(admin: AsyncEngine, key: int) -> int | None:
    async with admin.connect() as connection:
        pid = await connection.scalar(text(_HOLDER), {"key": _unsigned(key)})
        return int(pid) if pid is not None else None


async def _kill(admin: AsyncEngine, pid: int) -> None:
    async with admin.connect() as connection:
        await connection.scalar(text(f"SELECT pg_terminate_backend({pid})"))


async def test_a_run_whose_lock_session_died_takes_the_lock_again_and_goes_on(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    admin = create_engine(postgres_url)
    name = "lock-test-retaken"
    key = lock_key(name)
    try:
        async with run_lock(engine, name, watch_every=0.05) as held:
            assert held
            first = await _holder(admin, key)
            assert first is not None
            await _kill(admin, first)
            # The watch notices and takes it again on a new session, while the run goes on.
            deadline = time.monotonic() + 30
            while (now := await _holder(admin, key)) in (None, first):
                assert time.monotonic() < deadline, "the lock was not taken again"
                await asyncio.sleep(0.05)
            assert now != first
        assert await _holder(admin, key) is None  # released at the end of the run
    finally:
        await engine.dispose()
        await admin.dispose()


async def test_a_run_whose_lock_another_run_took_is_stopped(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    admin = create_engine(postgres_url)
    name = "lock-test-taken-over"
    key = lock_key(name)

    async def run(other: AsyncConnection) -> None:
        async with run_lock(engine, name, watch_every=1.0) as held:
            assert held
            first = await _holder(admin, key)
            assert first is not None
            await _kill(admin, first)
            # Another instance starts the same run the moment the lock is free.
            deadline = time.monotonic() + 30
            while not await other.scalar(text(f"SELECT pg_try_advisory_lock({key})")):
                assert time.monotonic() < deadline, "the lock was never free"
                await asyncio.sleep(0.01)
            await other.commit()
            await asyncio.sleep(60)  # the run goes on, until the watch stops it

    try:
        async with admin.connect() as other:
            with pytest.raises(RunLockLost, match="another run took the lock"):
                await run(other)
            async with run_lock(engine, name) as again:
                assert not again  # the other run holds it; this one did not take it back
    finally:
        await engine.dispose()
        await admin.dispose()
