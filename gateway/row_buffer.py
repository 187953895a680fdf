"""Rows written in bulk, a while after they were recorded: the hot path's way to keep a
trail (the audit log's reads, the recommendation lists served) without a round trip
per request.

``add`` returns at once; a background task writes what gathered every ``interval_s``
(and ``aclose`` the rest on shutdown). A write that fails keeps its rows for the next
attempt; past ``max_rows`` the oldest unwritten rows are dropped, and logged. A crash
loses at most the last interval's rows, the trade every high-volume access log makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

from gateway.errors import DatabaseUnavailable

Row = TypeVar("Row")


class RowBuffer(Generic[Row]):
    def __init__(
        self,
        write: Callable[[list[Row]], Awaitable[None]],
        *,
        name: str,
        logger: logging.Logger,
        interval_s: float = 1.0,
        max_rows: int = 50_000,
    ) -> None:
        self._write = write
        self._name = name
        self._logger = logger
        self._interval = interval_s
        self._max = max_rows
        self._pending: list[Row] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def add(self, rows: Iterable[Row]) -> None:
        """Queue rows to write; returns at once."""
        self._pending.extend(rows)
        if len(self._pending) > self._max:
            self._drop()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_later(), name=f"{self._name}-flush")

    def append(self, row: Row) -> None:
        """Queue one row (``add`` of one, without the iterable); returns at once."""
        self._pending.append(row)
        if len(self._pending) > self._max:
            self._drop()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_later(), name=f"{self._name}-flush")

    def _drop(self) -> None:
        dropped = len(self._pending) - self._max
        del self._pending[:dropped]
        self._logger.error(f"{self._name} buffer full; dropped entries", extra={"dropped": dropped})

    @property
    def writing(self) -> bool:
        """Whether a write is under way now."""
        return self._lock.locked()

    async def flush(self) -> None:
        """Write everything queued so far."""
        async with self._lock:
            batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                await self._write(batch)
            except BaseException as exc:
                # Kept for the next attempt rather than lost.
                self._pending[:0] = batch
                if isinstance(exc, DatabaseUnavailable):
                    # An outage, not a bug: one line a flush, no traceback.
                    self._logger.warning(
                        f"{self._name} entries not written (database unavailable); will retry"
                    )
                elif isinstance(exc, Exception):
                    self._logger.exception(f"{self._name} entries not written; will retry")
                else:
                    raise

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._interval)
        # Shielded: a shutdown that cancels this task while the write is under way must
        # not abandon it (that lost the batch, and on SQLite left the orphaned write's
        # lock in the way of the final flush: "database is locked").
        await asyncio.shield(self.flush())

    async def aclose(self) -> None:
        """Write everything recorded so far; a write already under way finishes first."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()  # waits on the lock for a shielded write still under way
