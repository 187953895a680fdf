"""The export's fast path on Postgres: a query's rows as Arrow batches through ADBC.

ADBC's Postgres driver runs the query as ``COPY (…) TO STDOUT (FORMAT binary)`` and
decodes the binary rows into Arrow arrays in C++: Postgres sends values without
formatting them as text (cheaper for it than the CSV it used to print, which pyarrow
then parsed back), and no row becomes a Python object on the way.  The driver is
blocking, so a read runs in a worker thread; a read cancelled from the event loop
(shutdown) cancels the statement on the server rather than waiting for it.

It connects with its own libpq connection, built from the engine's URL
(``libpq_uri``); the SQLAlchemy pool is not involved.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
from sqlalchemy.engine import URL

from gateway.export.threads import off_loop

# libpq's connection parameters that may arrive in a database URL's query; others
# (asyncpg's own, SQLAlchemy's) mean nothing to libpq and are left out.
_LIBPQ_PARAMS = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslpassword",
        "application_name",
        "options",
        "target_session_attrs",
        "host",
        "port",
        "passfile",
        "connect_timeout",
        "keepalives",
    }
)
# asyncpg's ``ssl=`` takes libpq's sslmode names, and ``true`` for ``require``.
_SSL = {"true": "require", "false": "disable"}
CONNECT_TIMEOUT_S = 10


def available() -> bool:
    return importlib.util.find_spec("adbc_driver_postgresql") is not None


def _driver() -> Any:
    """ADBC's DB-API module, imported when a run first reads through it: it imports
    pyarrow.dataset and pandas, a second of start-up nothing else in the gateway needs."""
    import adbc_driver_postgresql.dbapi as adbc

    return adbc


def libpq_uri(url: URL) -> str:
    """The engine's database as a libpq URI (password included: never log it)."""
    query: dict[str, str | tuple[str, ...]] = {"connect_timeout": str(CONNECT_TIMEOUT_S)}
    for key, value in url.query.items():
        if key == "ssl":
            text = value if isinstance(value, str) else value[-1]
            query["sslmode"] = _SSL.get(text.lower(), text)
        elif key in _LIBPQ_PARAMS:
            query[key] = value
    libpq = url.set(drivername="postgresql", query=query)
    return libpq.render_as_string(hide_password=False)


class FastPathUnavailable(Exception):
    """ADBC could not connect (a URL it reads otherwise than asyncpg, a server it cannot
    reach): nothing was read, and the driver path reads instead."""


class ArrowReader:
    """The ADBC connections of one export run: opened when first needed (connecting
    costs ~0.1 s: the driver loads the type catalog), reused for the next table, closed
    with ``close``."""

    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def _take(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        adbc = _driver()
        try:
            return adbc.connect(self._uri)
        except adbc.Error as exc:
            # The class only: libpq's message may quote the connection's parameters.
            raise FastPathUnavailable(type(exc).__name__) from None

    def _give(self, connection: Any) -> None:
        with self._lock:
            self._idle.append(connection)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    async def read(self, query: str, consume: Callable[[pa.RecordBatch], None]) -> int:
        """Hand ``query``'s rows to ``consume`` batch by batch (from a worker thread);
        the number of rows."""
        cursors: list[Any] = []
        cancelled = threading.Event()

        def work() -> int:
            connection = self._take()
            reusable = False
            try:
                with connection.cursor() as cursor:
                    cursors.append(cursor)
                    rows = 0
                    if not cancelled.is_set():
                        cursor.execute(query)
                        batches = iter(cursor.fetch_record_batch())
                        # One batch read ahead by a thread of its own: Postgres sends
                        # the next while this one is pseudonymised and written.
                        with ThreadPoolExecutor(1, thread_name_prefix="export-read") as ahead:
                            coming = ahead.submit(next, batches, None)
                            while (batch := coming.result()) is not None:
                                if cancelled.is_set():
                                    break
                                coming = ahead.submit(next, batches, None)
                                consume(batch)
                                rows += batch.num_rows
                connection.rollback()  # it only read
                reusable = not cancelled.is_set()
                return rows
            finally:
                # One that failed or was stopped half way is in an unknown state.
                if reusable:
                    self._give(connection)
                else:
                    connection.close()

        def stop() -> None:
            # The server's statement is cancelled too: the thread ends soon rather than
            # after the last row.
            cancelled.set()
            for cursor in cursors:
                with contextlib.suppress(_driver().Error):  # done with already
                    cursor.adbc_cancel()

        return await off_loop(work, on_cancel=stop)
