"""A test about to be failed by pytest-timeout first writes every asyncio task's stack.

pytest-timeout's own report shows the threads, and in an async test the main thread
is only the event loop waiting in ``select``: what hangs is a task, and which one
waits on what is what a hang's report needs. Shortly before the limit, a timer thread
asks each running loop to print its tasks (on the loop's own thread, where that is
safe); the output is captured with the test's and shown with its failure.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from collections.abc import Iterator

import pytest

_MARGIN_S = 10.0  # before pytest-timeout's limit: time for the loop to print


def _print_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    print(f"\n===== {len(tasks)} asyncio task(s) near the time limit =====", file=sys.stderr)
    for task in tasks:
        print(f"--- {task!r}", file=sys.stderr)
        task.print_stack(limit=25, file=sys.stderr)


def _report() -> None:
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.AbstractEventLoop) and obj.is_running():
            obj.call_soon_threadsafe(_print_tasks, obj)


@pytest.fixture(autouse=True)
def _hang_report(request: pytest.FixtureRequest) -> Iterator[None]:
    limit = float(request.config.getini("timeout") or 0)
    if limit <= _MARGIN_S:
        yield
        return
    timer = threading.Timer(limit - _MARGIN_S, _report)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
