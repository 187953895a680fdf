"""Rows written in bulk, a while after they were recorded: the hot path's way to keep a
trail (the audit log's reads, the recommendation lists served) without a round trip
per request.

``add`` returns at once; a background task writes what gathered every ``interval_s``
(and ``aclose`` the rest on shutdown). A write that fails keeps its rows for the next
attempt, even when its commit went through unacknowledged (a connection lost with the
reply): each writer skips the rows it finds stored (the audit log by its entries' ids,
the impressions by their lists'). Past ``max_rows`` the oldest unwritten rows are
dropped (down to nine tenths of the limit at once), and logged. A crash loses at most
the last interval's rows, the trade every high-volume access log makes.

A buffer of rows of several values each (``width``) may keep them flat, the values end to
end in one list (``append_values``), the writer given them so: a row then leaves no
object of its own while it waits (a tuple a row is one the garbage collector counts, and
tens of thousands waiting through a send's burst set off its collections, each pausing
every request in flight).

A buffer given a ``Lull`` lets a due write wait while rows pour in: the write then runs
in the lull after a burst (a send), not beside the requests it would slow, at most
``Lull.max_delay_s`` late or once ``Lull.write_at_rows`` rows wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.errors import DatabaseUnavailable

Row = TypeVar("Row")


@dataclass(frozen=True, slots=True)
class Lull:
    """When a due write waits: while more than ``busy_rows_per_s`` rows a second arrived
    over the last ``window_s`` (a burst the write would compete with for the CPU), it is
    put off by another ``probe_s``, at most until its oldest row is ``max_delay_s`` old
    or ``write_at_rows`` rows wait. The window spans several probes: a send's lists come
    a page at a time (renderBatch records a page's at once), and one probe's quiet
    between two pages is not the lull. The write's work is the same, only moved: on two
    cores SQLite's share of it ran beside a saturated endpoint and slowed it (impressions,
    bench/impressions.py, nine runs each alternated, with / without recording: throughput
    0.951 -> 0.964 and CPU a request 1.093 -> 1.073 (medians; better in 8 and 7 of 9);
    p99 1.043 -> 1.041, no difference shown)."""

    busy_rows_per_s: float = 1000.0
    max_delay_s: float = 30.0
    write_at_rows: int = 100_000
    probe_s: float = 0.25
    window_s: float = 1.0


class RowBuffer(Generic[Row]):
    def __init__(
        self,
        write: Callable[[list[Row]], Awaitable[None]],
        *,
        name: str,
        logger: logging.Logger,
        interval_s: float = 1.0,
        max_rows: int = 50_000,
        lull: Lull | None = None,
        write_rows: int | None = None,
        width: int = 1,
    ) -> None:
        self._write = write
        self._width = width  # values a row: > 1 for rows queued flat (``append_values``)
        # Rows a write is given at most (each its own transaction): a lulled batch of
        # 100,000 held SQLite's one write lock ~2.6-3.7 s, 200,000 ~7 s, past the 5 s
        # other writers wait for it ("database is locked").
        self._write_rows = write_rows
        self._name = name
        self._logger = logger
        self._interval = interval_s
        self._max = max_rows * width  # values
        self._lull = lull
        self._appended = 0  # rows ever queued: the lull's measure of the rate
        self._pending: list[Row] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def add(self, rows: Iterable[Row]) -> None:
        """Queue rows to write; returns at once."""
        before = len(self._pending)
        self._pending.extend(rows)
        self._appended += len(self._pending) - before
        if len(self._pending) > self._max:
            self._drop()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_later(), name=f"{self._name}-flush")

    def append(self, row: Row) -> None:
        """Queue one row (``add`` of one, without the iterable; a buffer of ``width``
        1); returns at once."""
        self._pending.append(row)
        self._appended += 1
        if len(self._pending) > self._max:
            self._drop()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_later(), name=f"{self._name}-flush")

    def append_values(self, values: Sequence[Row]) -> None:
        """Queue one row of ``width`` values, flat (its values, not the row); returns at
        once."""
        if len(values) != self._width:
            # One short beside one long would shift every later value into another
            # column, and another row: another customer's.
            raise ValueError(f"a row of {len(values)} values for {self._width}")
        self._pending += values
        self._appended += 1
        if len(self._pending) > self._max:
            self._drop()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_later(), name=f"{self._name}-flush")

    @property
    def rows(self) -> int:
        """Rows waiting."""
        return len(self._pending) // self._width

    def _drop(self) -> None:
        # Down to nine tenths of the limit, not to the limit: with the database down,
        # every row queued past it shifted the whole list (1.8 million values for the
        # impressions: ~0.5 ms of the loop a served list). Whole rows: each came whole.
        keep = self._max - self._max // 10 // self._width * self._width
        dropped = len(self._pending) - keep
        del self._pending[:dropped]
        self._logger.error(
            f"{self._name} buffer full; dropped entries", extra={"dropped": dropped // self._width}
        )

    @property
    def writing(self) -> bool:
        """Whether a write is under way now."""
        return self._lock.locked()

    async def flush(self) -> None:
        """Write everything queued so far."""
        async with self._lock:
            batch, self._pending = self._pending, []
            size = self._write_rows * self._width if self._write_rows else len(batch)
            at = 0
            try:
                while at < len(batch):
                    await self._write(batch[at : at + size] if size < len(batch) else batch)
                    at += size
            except BaseException as exc:
                # Kept for the next attempt rather than lost (the slices not written).
                self._pending[:0] = batch[at:]
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
        started = asyncio.get_running_loop().time()  # when the first row waiting came
        await asyncio.sleep(self._interval)
        if self._lull is not None:
            await self._wait_for_lull(self._lull, started)
        # Shielded: a shutdown that cancels this task while the write is under way must
        # not abandon it (that lost the batch, and on SQLite left the orphaned write's
        # lock in the way of the final flush: "database is locked").
        await asyncio.shield(self.flush())
        if self._pending:
            # Rows queued while that write ran found this task still running and started
            # none: without another, they waited for the next row, or for shutdown.
            self._task = asyncio.create_task(self._flush_later(), name=f"{self._name}-flush")

    async def _wait_for_lull(self, lull: Lull, started: float) -> None:
        clock = asyncio.get_running_loop().time
        # (time, rows ever queued) at each probe, back to the newest at least window_s
        # old: the rate over the clock's time (a busy loop wakes a probe late).
        seen = deque([(clock(), self._appended)])
        while self.rows < lull.write_at_rows and clock() - started < lull.max_delay_s:
            await asyncio.sleep(lull.probe_s)
            now = clock()
            seen.append((now, self._appended))
            while len(seen) > 1 and now - seen[1][0] >= lull.window_s:
                seen.popleft()
            then, before = seen[0]
            elapsed, rows = now - then, self._appended - before
            if elapsed >= lull.window_s and rows <= lull.busy_rows_per_s * elapsed:
                return

    async def aclose(self) -> None:
        """Write everything recorded so far; a write already under way finishes first."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()  # waits on the lock for a shielded write still under way
