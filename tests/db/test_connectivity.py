"""Which failures mean "the database (or the cache) cannot be reached", and which do not."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from gateway.db.connectivity import FailFastPool, is_connectivity_failure
from gateway.db.engine import create_engine
from gateway.errors import CacheUnavailable, DatabaseUnavailable, InvalidInput
from resolvers.http.error_boundary import as_unavailable


def test_refused_reset_starting_up_and_pool_timeouts_are_connectivity_failures() -> None:
    assert is_connectivity_failure(ConnectionRefusedError(111, "Connect call failed"))
    assert is_connectivity_failure(asyncpg.CannotConnectNowError("the database is starting up"))
    assert is_connectivity_failure(asyncpg.ConnectionDoesNotExistError("closed mid-operation"))
    assert is_connectivity_failure(sa_exc.TimeoutError("QueuePool limit reached"))
    wrapped = sa_exc.DBAPIError("SELECT 1", None, Exception("gone"), connection_invalidated=True)
    assert is_connectivity_failure(wrapped)


def test_a_constraint_violation_or_a_deadlock_is_not() -> None:
    unique = sa_exc.IntegrityError("INSERT", None, asyncpg.UniqueViolationError("duplicate"))
    deadlock = sa_exc.OperationalError("UPDATE", None, asyncpg.DeadlockDetectedError("deadlock"))
    assert not is_connectivity_failure(unique)
    assert not is_connectivity_failure(deadlock)
    assert not is_connectivity_failure(ValueError("a bug"))


def test_the_edge_codes_database_and_cache_outages_and_nothing_else() -> None:
    invalidated = sa_exc.DBAPIError("SELECT", None, Exception("gone"), connection_invalidated=True)
    database = as_unavailable(invalidated)
    assert isinstance(database, DatabaseUnavailable)
    assert database.code == "DATABASE_UNAVAILABLE"
    cache = as_unavailable(RedisConnectionError("Connection refused"))
    assert isinstance(cache, CacheUnavailable)
    assert cache.code == "CACHE_UNAVAILABLE"
    assert as_unavailable(InvalidInput("bad")) is None
    assert as_unavailable(OSError("a file")) is None  # not every OSError is the database


async def test_a_cancelled_statement_stays_cancelled(tmp_path: Path) -> None:
    """SQLAlchemy treats a cancellation mid-statement as a disconnect; it must not turn
    into DatabaseUnavailable (a sibling field failing cancels the others' reads)."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'cancel.db'}")

    async def reads() -> None:
        async with engine.connect() as connection:
            for _ in range(200):
                await connection.execute(text("SELECT 1"))

    try:
        for attempt in range(30):
            task = asyncio.create_task(reads())
            await asyncio.sleep(0.001 * attempt)  # cancelled at various points of its work
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await engine.dispose()


async def test_a_connection_whose_close_is_cancelled_is_force_closed_without_an_error_log(
    postgres_url: str,
) -> None:
    """A task cancelled while its pooled connection closes (shutdown stopping a scheduled
    scores run did so in CI) made the pool log an ERROR traceback an operator can do
    nothing with; the connection is now force-closed and the cancellation goes on."""
    engine = create_engine(postgres_url)
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        await connection.execute(text("SELECT 1"))
    assert raw is not None
    assert not raw.is_closed()  # back in the pool, open
    errors: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record)

    handler = Keep(level=logging.ERROR)
    # SQLAlchemy's pool logger, named after the pool's class.
    pool_logger = logging.getLogger(f"{FailFastPool.__module__}.{FailFastPool.__name__}")
    pool_logger.addHandler(handler)
    try:
        disposing = asyncio.create_task(engine.dispose())
        await asyncio.sleep(0)  # the close is under way: it waits for the server
        disposing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await disposing
    finally:
        pool_logger.removeHandler(handler)
    assert errors == []
    assert raw.is_closed()
