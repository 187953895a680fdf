"""An object store whose uploads wait at a gate: ``gated://`` (fsspec's memory store, with
each Parquet file's move into place held until the test opens the gate).  A test sees
whether the event loop stays free while an upload is under way, and can hold a run in
the middle for as long as it likes."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

# How long an upload waits for a gate nobody opens before it fails the run.
STUCK_S = 30.0


class Gate:
    def __init__(self) -> None:
        self.entered = threading.Event()  # an upload reached the gate
        self.open = threading.Event()


class GatedFileSystem(MemoryFileSystem):  # type: ignore[misc]  # fsspec has no types
    protocol = "gated"
    gates: dict[str, Gate] = {}  # noqa: RUF012 - one registry for every instance

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        # The memory store's own strips only ``memory://``.
        return str(super()._strip_protocol(path.removeprefix("gated://")))

    def mv(self, path1: Any, path2: Any, *args: Any, **kwargs: Any) -> Any:
        source = str(path1)
        bucket = source.strip("/").split("/", 1)[0]
        gate = self.gates.get(bucket)
        if gate is not None and source.endswith(".parquet.tmp"):
            gate.entered.set()
            if not gate.open.wait(STUCK_S):
                raise TimeoutError("the gate was never opened")
        return super().mv(path1, path2, *args, **kwargs)


fsspec.register_implementation("gated", GatedFileSystem, clobber=True)


@pytest.fixture
def gated() -> Iterator[tuple[str, Gate]]:
    """A target URL in a bucket of its own, and its gate (closed)."""
    bucket = f"bucket-{uuid.uuid4().hex[:8]}"
    gate = Gate()
    GatedFileSystem.gates[bucket] = gate
    yield f"gated://{bucket}/exports", gate
    gate.open.set()
    GatedFileSystem.gates.pop(bucket, None)
    fsspec.filesystem("memory").rm(f"/{bucket}", recursive=True)
