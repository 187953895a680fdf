"""The async engine and session factory, built from settings, owned by the app's lifespan.

A database that is down fails fast: connecting gives up after ``connect_timeout_s``,
waiting for a pooled connection after ``pool_timeout_s``, pooled connections are
pinged before use (a restart leaves them all dead), and every such failure is raised
as ``DatabaseUnavailable`` (gateway/db/connectivity.py), which the edge answers 503.
A database that stops answering without closing anything (a hung server, a network
dropping packets) is bounded too: the ping each checkout makes by the connect timeout,
every statement by ``statement_timeout_s``. An outside check found every request and
webhook waiting on it for ever (a pooled connection's ping or statement had no limit). A server-side
``statement_timeout`` would not help there: the server is what does not answer.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

from gateway.db.bulk import (
    SQLITE_PARAMETERS_NEEDED,
    SQLITE_VERSION_NEEDED,
    sqlite_parameters_at_most,
)
from gateway.db.connectivity import FailFastPool, watch

if TYPE_CHECKING:
    from gateway.settings import Settings

CONNECT_TIMEOUT_S = 2.0
POOL_TIMEOUT_S = 2.0


def create_engine(
    database_url: str,
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    pool_timeout_s: float = POOL_TIMEOUT_S,
    statement_timeout_s: float | None = None,
    **kwargs: Any,
) -> AsyncEngine:
    """An engine tuned for the backend: a pool for Postgres, WAL + FK checks for SQLite."""
    # Statement parameters hold customer data; keep them out of exception messages and logs.
    kwargs.setdefault("hide_parameters", True)
    if database_url.startswith("sqlite"):
        require_sqlite(sqlite3.sqlite_version_info, sqlite_parameters_at_most())
        engine = create_async_engine(database_url, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # Foreign keys are off by default in SQLite; WAL lets readers run beside a writer.
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        return watch(engine)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_timeout", pool_timeout_s)
    kwargs.setdefault("poolclass", FailFastPool)
    connect_args = kwargs.setdefault("connect_args", {})
    connect_args.setdefault("timeout", connect_timeout_s)  # asyncpg's, for connecting
    if statement_timeout_s is not None:
        # asyncpg's default for every operation of the connection (fetch, execute, copy):
        # past it the call raises TimeoutError (connectivity: DatabaseUnavailable).
        connect_args.setdefault("command_timeout", statement_timeout_s)
    return watch(create_async_engine(database_url, **kwargs), ping_timeout_s=connect_timeout_s)


def require_sqlite(version: tuple[int, int, int], parameters: int) -> None:
    """Refuses, with what is missing, a SQLite library the gateway's statements would
    fail on at their first use (a write's RETURNING, a long IN list) rather than at
    start: ``version`` and the bound parameters a statement may hold."""
    if version < SQLITE_VERSION_NEEDED:
        raise RuntimeError(
            f"SQLite {'.'.join(map(str, SQLITE_VERSION_NEEDED))} or newer is needed "
            f"(RETURNING); this Python's library is {'.'.join(map(str, version))}"
        )
    if parameters < SQLITE_PARAMETERS_NEEDED:
        raise RuntimeError(
            f"SQLite must allow {SQLITE_PARAMETERS_NEEDED} bound parameters a statement; "
            f"this Python's library was compiled with SQLITE_MAX_VARIABLE_NUMBER={parameters}"
        )


def engine_for(settings: Settings, *, batch: bool = False) -> AsyncEngine:
    """The configured engine, the one every process builds (``gateway serve``, ``gateway
    consume``, the CLI's batch commands): the same fail-fast timeouts wherever it is
    opened, and for all but ``batch`` work the statement timeout (a retention run's
    count over every event may take longer, and nobody waits on it as on a request)."""
    return create_engine(
        settings.database_url,
        connect_timeout_s=settings.database_connect_timeout_s,
        pool_timeout_s=settings.database_pool_timeout_s,
        statement_timeout_s=None if batch else settings.database_statement_timeout_s,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: services return plain records built after commit.
    return async_sessionmaker(engine, expire_on_commit=False)
