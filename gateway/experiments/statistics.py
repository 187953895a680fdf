"""What an experiment's counts say: a rate's Wilson score interval, and the lift of a
variant over the control with a two-sided two-proportion z-test (pooled variance).

Wilson rather than the normal ("Wald") interval: click-through rates are small and
some variants small, where Wald's interval leaves [0, 1] or shrinks to nothing at zero
clicks. scipy supplies the normal quantiles and tails; the tests hold the interval to
``scipy.stats.binomtest(...).proportion_ci(method="wilson")`` and the p-value to a
chi-square test of the 2x2 table without continuity correction (the same test).
scipy.stats is imported on first use: the serving app would otherwise pay its import
(seconds) at every start for a figure it computes when results are asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any


@dataclass(frozen=True, slots=True)
class Rate:
    successes: int
    trials: int
    low: float
    high: float

    @property
    def value(self) -> float | None:
        return self.successes / self.trials if self.trials else None


@dataclass(frozen=True, slots=True)
class Comparison:
    """A variant against the control: relative lift of the rate, and the test's p-value
    (None where either side has no trials or the pooled rate is 0 or 1)."""

    lift: float | None
    p_value: float | None


def wilson(successes: int, trials: int, confidence: float = 0.95) -> Rate:
    """The rate with its Wilson score interval; [0, 1] when there are no trials."""
    if not 0 <= successes <= trials:
        raise ValueError("successes must be between 0 and the trials")
    if trials == 0:
        return Rate(0, 0, 0.0, 1.0)
    z = float(_norm().ppf(0.5 + confidence / 2))
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # Exactly 0 (1) with no successes (failures): the formula's is, up to rounding.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Rate(successes, trials, low, high)


def compare(control: Rate, variant: Rate) -> Comparison:
    """The variant's lift over the control (variant / control - 1) and the p-value."""
    if not control.trials or not variant.trials:
        return Comparison(None, None)
    lift = (
        variant.successes / variant.trials / (control.successes / control.trials) - 1
        if control.successes
        else None
    )
    pooled = (control.successes + variant.successes) / (control.trials + variant.trials)
    spread = pooled * (1 - pooled) * (1 / control.trials + 1 / variant.trials)
    if spread <= 0:
        return Comparison(lift, None)
    difference = variant.successes / variant.trials - control.successes / control.trials
    z = difference / math.sqrt(spread)
    return Comparison(lift, float(2 * _norm().sf(abs(z))))


@cache
def _norm() -> Any:
    from scipy.stats import norm

    return norm
