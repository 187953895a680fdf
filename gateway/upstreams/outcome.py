"""What one upstream answered for one customer: the value or the error, how long it
took, when it was fetched, and how fresh it is (``SourceStatus``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar

from adapters.errors import UpstreamError
from adapters.protocols import Kind

T = TypeVar("T")


class SourceStatus(StrEnum):
    OK = "OK"
    CACHED = "CACHED"
    STALE = "STALE"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """What one upstream answered for one customer, and how long it took."""

    upstream: str
    kind: Kind
    value: T | None
    error: UpstreamError | None
    latency_ms: float
    fetched_at: datetime
    status: SourceStatus = SourceStatus.OK
    # For STALE: why the fresh fetch failed (the value is the last good answer).
    cause: UpstreamError | None = None

    def age_s(self, now: datetime) -> float:
        return max(0.0, (now - self.fetched_at).total_seconds())

    def unwrap(self) -> T | None:
        if self.error is not None:
            raise self.error
        return self.value
