"""Which variant of an experiment a customer is in: a keyed hash of the experiment's name
and the customer's id, mapped onto the variants' weights.

Nothing is stored and nothing is random at serving time, so every instance, every send
and every rerun puts a customer in the same variant (Python's ``hash`` is salted per
process: BLAKE2b is not). The experiment's name is part of the key, so a customer's
variant in one experiment says nothing about their variant in another.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.errors import InvalidInput

# What a variant may serve: the recommender's strategies, or nothing (a holdout).
STRATEGIES = ("item_to_item", "popularity", "model", "none")
MAX_VARIANTS = 20
_SCALE = float(1 << 64)


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    strategy: str
    weight: float


@dataclass(frozen=True, slots=True)
class Experiment:
    """A validated experiment; the first variant is the control lift is measured against."""

    name: str
    variants: tuple[Variant, ...]
    start: datetime
    end: datetime

    def running(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def variant_of(self, customer_id: uuid.UUID) -> Variant:
        """The customer's variant: the same on every instance, for every send."""
        point = bucket(self.name, customer_id)
        total = sum(v.weight for v in self.variants)
        reached = 0.0
        for variant in self.variants:
            reached += variant.weight / total
            if point < reached:
                return variant
        return self.variants[-1]  # the rounding of the last sum


def bucket(experiment: str, customer_id: uuid.UUID) -> float:
    """A number in [0, 1), uniform over customers, fixed for (experiment, customer)."""
    digest = hashlib.blake2b(
        customer_id.bytes, key=experiment.encode()[:64], digest_size=8, person=b"gw-exp"
    ).digest()
    return int.from_bytes(digest, "big") / _SCALE


def experiment(
    name: str, variants: Sequence[tuple[str, str, float]], start: datetime, end: datetime
) -> Experiment:
    """Validate an experiment as given (name, (variant, strategy, weight)…, start, end);
    ``InvalidInput`` names the field and the rule."""
    name = name.strip()
    if not 1 <= len(name) <= 64:
        raise InvalidInput("An experiment's name is 1 to 64 characters", field="name")
    if not 2 <= len(variants) <= MAX_VARIANTS:
        raise InvalidInput(
            f"An experiment has 2 to {MAX_VARIANTS} variants (a control first)", field="variants"
        )
    checked = []
    for position, (variant, strategy, weight) in enumerate(variants):
        where = f"variants.{position}"
        if not 1 <= len(variant.strip()) <= 64:
            raise InvalidInput("A variant's name is 1 to 64 characters", field=f"{where}.name")
        if strategy not in STRATEGIES:
            raise InvalidInput(
                f"A variant's strategy is one of {', '.join(STRATEGIES)}",
                field=f"{where}.strategy",
            )
        if not weight > 0 or weight == float("inf"):
            raise InvalidInput("A variant's weight is a positive number", field=f"{where}.weight")
        checked.append(Variant(variant.strip(), strategy, float(weight)))
    if len({v.name for v in checked}) != len(checked):
        raise InvalidInput("Variant names must differ", field="variants")
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput("Start and end need a time zone (UTC)", field="start")
    if not start < end:
        raise InvalidInput("An experiment ends after it starts", field="end")
    return Experiment(name, tuple(checked), start, end)
