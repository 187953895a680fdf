"""The run lock: one run at a time, and a run whose lock session was lost mid-way (a
failover, an idle timeout) still ends as it ran instead of failing at its unlock."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text

from gateway.db.engine import create_engine
from gateway.db.locks import lock_key, run_lock


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
                            "WHERE locktype = 'advisory' AND "
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
