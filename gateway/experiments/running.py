"""Which experiment runs now, and a customer's variant in it, for the serving hot path.

The saved experiments are read once per ``ttl_s`` per process (one query, shared by
every request in flight), so serving pays a hash per customer and no round trip. A save
drops this process's copy at once; other instances see it within ``ttl_s``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.experiments.assignment import Experiment, Variant, experiment
from gateway.experiments.store import ExperimentStore
from gateway.recommendations.memo import Memo


@dataclass(frozen=True, slots=True)
class Assignment:
    """A customer's place in a running experiment."""

    experiment: Experiment
    variant: Variant


class Experiments:
    def __init__(self, store: ExperimentStore, ttl_s: float = 5.0) -> None:
        self.store = store
        self._saved: Memo[None, list[Experiment]] = Memo(ttl_s, size=1)

    async def all(self) -> list[Experiment]:
        return await self._saved.fetch(None, self._read) or []

    async def _read(self, _: None) -> list[Experiment]:
        return await self.store.all()

    async def get(self, name: str) -> Experiment | None:
        return await self.store.get(name)

    async def running(self, at: datetime | None = None) -> Experiment | None:
        """The experiment serving now (windows never overlap: the store refuses it)."""
        now = at or datetime.now(UTC)
        return next((found for found in await self.all() if found.running(now)), None)

    async def assignment(
        self, customer_id: uuid.UUID, at: datetime | None = None
    ) -> Assignment | None:
        found = await self.running(at)
        return Assignment(found, found.variant_of(customer_id)) if found is not None else None

    async def assignments(
        self, customer_ids: Sequence[uuid.UUID], at: datetime | None = None
    ) -> dict[uuid.UUID, Assignment]:
        """The running experiment's variant of each customer (none without one)."""
        found = await self.running(at)
        if found is None:
            return {}
        return {c: Assignment(found, found.variant_of(c)) for c in customer_ids}

    async def save(
        self,
        name: str,
        variants: Sequence[tuple[str, str, float]],
        start: datetime,
        end: datetime,
    ) -> Experiment:
        """Validate (``InvalidInput`` names the field) and store (``Conflict`` when
        another experiment runs in part of that time)."""
        saved = await self.store.save(experiment(name, variants, start, end))
        self._saved.clear()
        return saved

    def forget(self) -> None:
        """Drop this process's copy (tests, and after a save elsewhere is known)."""
        self._saved.clear()
