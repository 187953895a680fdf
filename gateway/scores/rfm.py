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
    return rfm_with(boundaries(recency, frequency, monetary), recency, frequency, monetary)


@dataclass(frozen=True)
class Boundaries:
    """The four values a customer must beat for scores 2, 3, 4 and 5 on each axis, as
    one build's population set them: ``gateway scores refresh`` scores a few changed
    customers against these, so their quintiles mean what everyone else's do."""

    r: tuple[float, ...]
    f: tuple[float, ...]
    m: tuple[float, ...]

    def json(self) -> dict[str, list[float]]:
        return {"r": list(self.r), "f": list(self.f), "m": list(self.m)}

    @classmethod
    def of(cls, value: dict[str, list[float]]) -> Boundaries:
        return cls(tuple(value["r"]), tuple(value["f"]), tuple(value["m"]))


def _edges(values: Floats, *, smaller_is_better: bool) -> tuple[float, ...]:
    """``quintile`` as thresholds: score >= k when at least t = ceil((k-1) n / 5) of the
    pool are strictly worse, i.e. when the value beats the t-th worst."""
    pool = np.sort(values)
    n = len(pool)
    if not n:
        return ()
    ts = [-((-(k - 1) * n) // 5) for k in range(2, 6)]
    return tuple(float(pool[n - t] if smaller_is_better else pool[t - 1]) for t in ts)


def boundaries(recency: Floats, frequency: Floats, monetary: Floats) -> Boundaries:
    known = frequency > 0
    return Boundaries(
        _edges(recency[known], smaller_is_better=True),
        _edges(frequency[known], smaller_is_better=False),
        _edges(monetary[known], smaller_is_better=False),
    )


def _scored(
    values: Floats,
    known: npt.NDArray[np.bool_],
    edges: tuple[float, ...],
    *,
    smaller_is_better: bool,
) -> Scores:
    score = np.zeros(len(values), np.int64)
    if not edges:
        return score
    mine = values[known][:, None]
    beats = mine < np.asarray(edges) if smaller_is_better else mine > np.asarray(edges)
    score[known] = 1 + beats.sum(axis=1)
    return score


def rfm_with(b: Boundaries, recency: Floats, frequency: Floats, monetary: Floats) -> Rfm:
    """Scores and segments against a build's ``b`` (customers without an order: none)."""
    known = frequency > 0
    r = _scored(recency, known, b.r, smaller_is_better=True)
    f = _scored(frequency, known, b.f, smaller_is_better=False)
    m = _scored(monetary, known, b.m, smaller_is_better=False)
    return Rfm(r, f, m, [segment_of(int(a), int(c)) for a, c in zip(r, f, strict=True)])
