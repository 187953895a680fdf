"""A scores run inside ``gateway serve``: ``scores refresh`` or ``scores build --retrain``
as the schedule starts them (``gateway.export.runs.Runs``, the export's and retention's
mechanism), under the same lock as the command line's (``ScoreStore.exclusive``).

A run fits and scores in Python (numpy, scikit-learn): tens of seconds of a core for a
build over 100,000 customers. On the serving event loop that would stall every request
as long, so a run gets a worker thread with an event loop and a database engine of its
own (asyncpg connections belong to one loop). Cancelling the caller (shutdown, the
run's timeout) cancels the run at its next database call and waits for the thread, so
the lock is released only once nothing of the run goes on; a build cancelled before
its one transaction commits writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.export.threads import off_loop
from gateway.scores.build import build
from gateway.scores.refresh import refresh
from gateway.scores.store import ScoreStore
from gateway.settings import Settings

DEFAULT_HORIZON = 30  # the CLI's default, until a build chose another


class _Worker:
    """The worker thread's loop and task, for a cancellation from the serving loop."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False

    def run(self, work: Callable[[], Awaitable[str]]) -> str:
        async def main() -> str:
            with self._guard:
                self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
                if self._cancelled:
                    raise asyncio.CancelledError
            return await work()

        return asyncio.run(main())

    def cancel(self) -> None:
        with self._guard:
            self._cancelled = True
            if self._loop is not None and self._task is not None:
                with contextlib.suppress(RuntimeError):  # the loop has closed: it is over
                    self._loop.call_soon_threadsafe(self._task.cancel)


async def run_scores(settings: Settings, key: bytes, *, retrain: bool) -> str:
    """One refresh (``retrain`` False) or one build with retraining at the last build's
    horizon; its summary line. Raises as the commands do (``ScoresBusy`` while a build
    or refresh holds the lock, here or on another instance)."""

    async def work() -> str:
        engine = create_engine(settings.database_url)
        try:
            store = ScoreStore(create_sessionmaker(engine), key)
            threads = settings.scores_threads
            if not retrain:
                return (await refresh(store, threads=threads)).line()
            last = await store.last_build()
            horizon = DEFAULT_HORIZON if last is None else last.horizon_days
            summary = await build(store, horizon=horizon, retrain=True, threads=threads)
            return summary.line()
        finally:
            await engine.dispose()

    worker = _Worker()
    return await off_loop(lambda: worker.run(work), on_cancel=worker.cancel)
