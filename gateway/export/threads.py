"""Blocking work of an export (Parquet writes, uploads, the target's bookkeeping, the
ADBC driver) run off the event loop, so a gateway serving requests keeps answering them
while it exports.

A cancelled caller (shutdown, a run's timeout, a lost run lock) waits for the thread to
finish its step before the cancellation goes on: the run's lock is released only once
nothing of the run touches the target any more, so a file renamed into place by a
thread still running cannot race the next run's clean-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def off_loop(work: Callable[[], T], *, on_cancel: Callable[[], None] | None = None) -> T:
    """``work()`` in a worker thread; ``on_cancel`` (from the event loop) asks it to stop
    early when the caller is cancelled."""
    running = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        if on_cancel is not None:
            on_cancel()
        await asyncio.gather(running, return_exceptions=True)
        raise
