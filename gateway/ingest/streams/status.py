"""What the consumer reports of itself (for /readyz)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gateway.ingest.streams.transport import Lag


@dataclass(slots=True)
class ConsumerStatus:
    """What /readyz says about the consumer."""

    transport: str
    running: bool = False
    batches: int = 0
    stored: int = 0
    last_batch_at: float | None = None  # time.time()
    database_waiting: bool = False  # holding a batch until the database answers
    last_error: str | None = None
    lag: Lag | None = None

    def report(self) -> dict[str, Any]:
        lag = self.lag
        return {
            "transport": self.transport,
            "running": self.running,
            "batches": self.batches,
            "stored": self.stored,
            "last_batch_s_ago": (
                round(time.time() - self.last_batch_at, 1) if self.last_batch_at else None
            ),
            "waiting_for_database": self.database_waiting,
            "last_error": self.last_error,
            "lag": None
            if lag is None
            else {
                "pending": lag.pending,
                "waiting": lag.waiting,
                "oldest_age_s": None if lag.oldest_age_s is None else round(lag.oldest_age_s, 1),
            },
        }
