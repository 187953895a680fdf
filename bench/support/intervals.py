"""A distribution-free interval for the median of a benchmark's turns: whether a ratio
is under a target or only its median of one run happened to be (bench/impressions.py).

The order statistics ``x(k)`` and ``x(n - k + 1)`` of ``n`` values bracket the median
with probability ``1 - 2 P(B <= k - 1)``, ``B`` binomial (n, 1/2), whatever the values'
distribution (turns on a shared machine are not normal): ``k`` is the largest with that
at least the asked confidence. Six turns give their extremes (96.9 %), ten the second
and ninth (97.9 %)."""

from __future__ import annotations

from collections.abc import Sequence

from scipy.stats import binom


def median_interval(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """(low, high, the interval's own confidence) for the median of ``values``: with too
    few values for ``confidence`` (under six for 95 %), their extremes and the lower
    confidence those give."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("no values")
    k = 1
    while k < n // 2 and 1 - 2 * binom.cdf(k, n, 0.5) >= confidence:
        k += 1
    return ordered[k - 1], ordered[n - k], float(1 - 2 * binom.cdf(k - 1, n, 0.5))
