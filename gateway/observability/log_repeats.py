"""Repeated identical errors, summarised: the first one is written whole
(traceback included), the repeats within an interval are only counted, and one line
says how many there were.

An outage makes every request fail the same way: a traceback per request wrote 26 MB
of log in 20 s (issue #17), drowning what differed. Two records are "the same" when
they come from the same logger with the same message template and, when they carry an
exception, the same exception type raised at the same place; their arguments (ids,
counts) may differ. A window opens at the first record of a kind and closes
``interval_s`` later: its summary is written at the first record of any kind logged
after that, at the next ``flush_due()`` (the app calls it every second), or at
``flush()`` on shutdown. The next record of that kind opens a new window, written whole.

This is a handler's filter: it decides what is written, not what is logged, so a record
is still created for every failure (metrics, the tests' error log and other handlers
see each one).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RepeatSummary"]

Key = tuple[str, str, str, str]


@dataclass(slots=True)
class _Window:
    first: logging.LogRecord
    opened_at: float
    repeats: int = 0


def _key(record: logging.LogRecord) -> Key:
    where = ""
    kind = ""
    if record.exc_info and record.exc_info[0] is not None:
        kind = record.exc_info[0].__qualname__
        frames = traceback.extract_tb(record.exc_info[2]) if record.exc_info[2] else []
        if frames:
            where = f"{frames[-1].filename}:{frames[-1].lineno}"
    return (record.name, str(record.msg), kind, where)


class RepeatSummary(logging.Filter):
    """Attach to a handler: ``handler.addFilter(RepeatSummary(handler.handle))``.

    ``write`` receives the summary records (marked ``repeat_summary``, which this filter
    lets through).
    """

    def __init__(
        self,
        write: Callable[[logging.LogRecord], object],
        *,
        interval_s: float = 10.0,
        level: int = logging.ERROR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.level = level
        self._write = write
        self._clock = clock
        self._windows: dict[Key, _Window] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "repeat_summary", False):
            return True
        self.flush_due()
        if self.interval_s <= 0 or not self._summarised(record):
            return True
        key = _key(record)
        with self._lock:
            window = self._windows.get(key)
            if window is None:
                self._windows[key] = _Window(record, self._clock())
                return True
            window.repeats += 1
            return False

    def _summarised(self, record: logging.LogRecord) -> bool:
        """Errors, and warnings with a traceback; a plain warning (a refused webhook) is
        one short line per event that an operator may want each of."""
        if record.levelno >= self.level:
            return True
        return record.levelno >= logging.WARNING and bool(record.exc_info)

    def flush_due(self) -> None:
        """Write the summaries of the windows that have ended."""
        now = self._clock()
        self._close(lambda window: now - window.opened_at >= self.interval_s, now)

    async def run(self, every_s: float = 1.0) -> None:
        """Write due summaries every ``every_s`` until cancelled (the app's lifespan runs
        it): a burst that stopped still gets its count written."""
        while True:
            await asyncio.sleep(every_s)
            self.flush_due()

    def flush(self) -> None:
        """Write every pending summary now (at shutdown)."""
        self._close(lambda window: True, self._clock())

    def _close(self, ended: Callable[[_Window], bool], now: float) -> None:
        with self._lock:
            closing = [(k, w) for k, w in self._windows.items() if ended(w)]
            for key, _ in closing:
                del self._windows[key]
        # Written outside the lock: the handler may call this filter again.
        for _, window in closing:
            if window.repeats:
                self._write(self._summary(window, now))

    def _summary(self, window: _Window, now: float) -> logging.LogRecord:
        first = window.first
        seconds = max(now - window.opened_at, 0.0)
        # Built directly, not through the record factory: it is no new event.
        record = logging.LogRecord(
            first.name,
            first.levelno,
            first.pathname,
            first.lineno,
            "%s (repeated %d times in the last %.0f s)",
            (str(first.msg), window.repeats, seconds),
            None,
            first.funcName,
        )
        record.repeat_summary = True
        record.repeated = window.repeats
        record.interval_s = round(seconds, 3)
        record.exception_type = _key(first)[2] or None
        return record
