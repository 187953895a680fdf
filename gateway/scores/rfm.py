"""RFM quintiles and the named segments of the usual RFM grid.

A score is 1 + ⌊5 x the share of customers strictly worse⌋: customers with the same
value share a score (on a data set where most bought once, they all score F = 1
rather than being spread over three quintiles at random), and the best get 5.
Recency is better when smaller. Customers without an order get no score and no segment.

The grid (recency score x frequency score) is the one RFM tools use, with "lost"
split from "hibernating" for customers in the lowest quintile of both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.scores.ledger import Floats

Scores = npt.NDArray[np.int64]

SEGMENTS = (
    "champions",
    "loyal",
    "potential_loyalists",
    "new",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cant_lose_them",
    "hibernating",
    "lost",
)


def segment_of(r: int, f: int) -> str | None:
    """The grid's name for recency score ``r`` and frequency score ``f`` (1-5)."""
    if r < 1 or f < 1:
        return None
    if r == 5 and f >= 4:
        return "champions"
    if r >= 3 and f >= 4:
        return "loyal"
    if r >= 4 and f in (2, 3):
        return "potential_loyalists"
    if r == 5 and f == 1:
        return "new"
    if r == 4 and f == 1:
        return "promising"
    if r == 3 and f == 3:
        return "need_attention"
    if r == 3:
        return "about_to_sleep"
    if f == 5:
        return "cant_lose_them"
    if f >= 3:
        return "at_risk"
    if r == 1 and f == 1:
        return "lost"
    return "hibernating"


@dataclass(frozen=True)
class Rfm:
    r: Scores
    f: Scores
    m: Scores
    segment: list[str | None]


def quintile(values: Floats, known: npt.NDArray[np.bool_], *, smaller_is_better: bool) -> Scores:
    """Scores 1-5 for ``known`` customers (0 for the others)."""
    pool = np.sort(values[known])
    score = np.zeros(len(values), np.int64)
    if not len(pool):
        return score
    mine = values[known]
    if smaller_is_better:
        worse = len(pool) - np.searchsorted(pool, mine, side="right")
    else:
        worse = np.searchsorted(pool, mine, side="left")
    score[known] = 1 + np.minimum(4, (5 * worse) // len(pool))
    return score


def rfm(recency: Floats, frequency: Floats, monetary: Floats) -> Rfm:
    known = frequency > 0
    r = quintile(recency, known, smaller_is_better=True)
    f = quintile(frequency, known, smaller_is_better=False)
    m = quintile(monetary, known, smaller_is_better=False)
    return Rfm(r, f, m, [segment_of(int(a), int(b)) for a, b in zip(r, f, strict=True)])
