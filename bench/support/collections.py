"""The garbage collector's pauses during a measured run, as a figure beside its
latency: a young collection of the gateway's threshold pauses every request in flight
for milliseconds, so a few more of them in a run move its p99."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def collector_pauses() -> Iterator[dict[str, float]]:
    """Counts the collections that run inside the block: ``young`` (generation 0),
    ``older`` (1 and 2) and their total pause, ``gc_ms``, filled in as it ends."""
    figures = {"young": 0.0, "older": 0.0, "gc_ms": 0.0}
    started: list[float] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            figures["gc_ms"] += (time.perf_counter() - started.pop()) * 1000
            figures["young" if info["generation"] == 0 else "older"] += 1

    gc.callbacks.append(note)
    try:
        yield figures
    finally:
        gc.callbacks.remove(note)
