"""Recognising that the database cannot be reached, in one place, and saying so as one
domain error: ``DatabaseUnavailable`` (code ``DATABASE_UNAVAILABLE``).

A down database shows up in many shapes, depending on when it went away:

- connecting: ``ConnectionRefusedError``/``OSError``/``TimeoutError`` from the socket,
  asyncpg's ``CannotConnectNowError`` (starting up or shutting down) or
  ``TooManyConnectionsError``; SQLAlchemy passes these through unwrapped;
- on a pooled connection: a ``DBAPIError`` whose ``connection_invalidated`` is set
  (asyncpg's ``ConnectionDoesNotExistError``, "connection is closed"), SQLSTATE class
  08 or 57P01-57P03 (admin or crash shutdown);
- waiting for a connection: the pool's ``TimeoutError`` when every connection is busy
  (each stuck connecting to a server that does not answer).

``watch`` hooks an engine so that each of these is raised as ``DatabaseUnavailable``
(the original chained as its cause) and nothing else is: a constraint violation, a
deadlock or a bug keeps its own exception.
"""

from __future__ import annotations

import asyncio
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import await_

from gateway.errors import DatabaseUnavailable

# Connection exceptions (class 08), operator intervention (admin/crash shutdown, cannot
# connect now) and too many connections: the server, not the statement, is the problem.
_SQLSTATE_PREFIXES = ("08", "57P01", "57P02", "57P03", "53300")
_CLOSED_MESSAGES = ("connection is closed", "connection was closed", "underlying connection")
MESSAGE = "The database is unreachable; try again shortly."


def is_connectivity_failure(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) says the database could not be reached."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if _is_connectivity(current):
            return True
        pending.extend([current.__cause__, getattr(current, "orig", None)])
    return False


def _is_connectivity(error: BaseException) -> bool:
    if isinstance(error, DatabaseUnavailable | sa_exc.TimeoutError):
        return True
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, OSError | asyncio.TimeoutError):  # refused, reset, timed out
        return True
    state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if isinstance(state, str) and state.startswith(_SQLSTATE_PREFIXES):
        return True
    message = str(error).lower()
    return type(error).__name__ == "InterfaceError" and any(m in message for m in _CLOSED_MESSAGES)


def unavailable(error: BaseException) -> DatabaseUnavailable:
    failure = DatabaseUnavailable(MESSAGE)
    failure.__cause__ = error
    return failure


class FailFastPool(AsyncAdaptedQueuePool):
    """The usual pool, whose wait for a free connection ends as ``DatabaseUnavailable``."""

    def _do_get(self) -> Any:
        try:
            return super()._do_get()
        except sa_exc.TimeoutError as exc:
            raise unavailable(exc) from exc

    def _close_connection(self, connection: Any, *, terminate: bool = False) -> None:
        """As the pool closes a connection, but a task cancelled while it closes (shutdown
        stopping a scheduled scores run, a request past its budget) has the connection
        terminated (SQLAlchemy's terminate: a graceful close of at most 2 s, shielded, then
        a forced one) and the cancellation go on, without the ERROR traceback SQLAlchemy
        logs for it: the connection is discarded either way. Overrides a private method of
        SQLAlchemy's pool (2.1); tests/db/test_connectivity.py fails if it changes."""
        if terminate:
            super()._close_connection(connection, terminate=True)
            return
        try:
            self._dialect.do_close(connection)
        except asyncio.CancelledError:
            super()._close_connection(connection, terminate=True)
            raise
        except Exception:
            self.logger.error("Exception closing connection %r", connection, exc_info=True)


class Reachability:
    """Whether the database answered last time it was asked: answers served meanwhile
    from caches say so (``reachable`` is False from a connectivity failure until a
    connection is checked out again)."""

    def __init__(self) -> None:
        self.reachable = True


_SEEN: WeakKeyDictionary[Engine, Reachability] = WeakKeyDictionary()


def reachability(engine: AsyncEngine) -> Reachability:
    """What ``engine``'s hooks last saw of the database (always reachable if unwatched)."""
    seen = _SEEN.get(engine.sync_engine)
    return Reachability() if seen is None else seen


def watch(engine: AsyncEngine, ping_timeout_s: float | None = None) -> AsyncEngine:
    """Raise ``DatabaseUnavailable`` for every connectivity failure of ``engine``; a
    pooled connection whose ping takes longer than ``ping_timeout_s`` is discarded."""
    sync_engine = engine.sync_engine
    seen = Reachability()
    _SEEN[sync_engine] = seen

    @event.listens_for(sync_engine, "checkout")
    def _checked_out(*_args: Any) -> None:
        seen.reachable = True  # after its ping (pre_ping), or a fresh connect

    @event.listens_for(sync_engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        # Connecting is where a down server shows first; SQLAlchemy does not wrap it.
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as exc:
            if is_connectivity_failure(exc):
                seen.reachable = False
                raise unavailable(exc) from exc
            raise

    ping = sync_engine.dialect.do_ping

    def _ping(dbapi_connection: Any) -> bool:
        # A ping that times out (a server that stopped answering: no error, no close)
        # is a dead connection: the pool discards it and connects afresh (bounded by
        # the connect timeout). The driver's TimeoutError is no DB-API error, so
        # SQLAlchemy raised it from the checkout as it was: a 500, not a 503. Bounded
        # by ``ping_timeout_s``, not by the statements' longer limit: each checkout
        # pings, so a hung server costs a request this long, not the statement timeout.
        try:
            pinging = getattr(dbapi_connection, "_async_ping", None)  # asyncpg's adapter
            if ping_timeout_s is None or pinging is None:
                alive: bool = ping(dbapi_connection)
            else:
                try:
                    await_(asyncio.wait_for(pinging(), ping_timeout_s))
                except (TimeoutError, OSError):
                    raise
                except Exception as error:  # noqa: BLE001  (re-raised as a DB-API error)
                    # As the adapter's own ping: the driver's error as a DB-API one, which
                    # SQLAlchemy then reads (a closed connection is a disconnect: it
                    # reconnects quietly; raised as it was, it was a 500 after a restart).
                    dbapi_connection._handle_exception(error)
                alive = True
        except (TimeoutError, OSError):
            seen.reachable = False
            return False
        return alive

    sync_engine.dialect.do_ping = _ping  # type: ignore[method-assign]

    @event.listens_for(sync_engine, "handle_error")
    def _statement_failed(context: ExceptionContext) -> None:
        # A ping's failure is the pool's to handle: it reconnects (or fails connecting).
        # A cancelled statement (its request gave up, a sibling field failed) counts as
        # a disconnect to SQLAlchemy, which drops the connection; the cancellation
        # itself must go on as it is.
        if context.is_pre_ping:
            return
        if not isinstance(context.original_exception, Exception):
            return
        if context.is_disconnect or is_connectivity_failure(context.original_exception):
            seen.reachable = False
            raise unavailable(context.original_exception) from context.original_exception

    return engine
