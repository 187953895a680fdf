"""Pairwise precision, recall and F1 of a clustering against known true clusters."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

R = TypeVar("R", bound=Hashable)  # a record
P = TypeVar("P", bound=Hashable)  # a predicted cluster
T = TypeVar("T", bound=Hashable)  # a true cluster


@dataclass(frozen=True, slots=True)
class PairMetrics:
    true_positives: int
    predicted_pairs: int
    true_pairs: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def _pairs(sizes: Mapping[Any, int]) -> int:
    return sum(n * (n - 1) // 2 for n in sizes.values())


def pair_metrics(predicted: Mapping[R, P], truth: Mapping[R, T]) -> PairMetrics:
    """Compare two record → cluster maps over their common records, by pairs of records."""
    predicted_sizes: defaultdict[P, int] = defaultdict(int)
    true_sizes: defaultdict[T, int] = defaultdict(int)
    both: defaultdict[tuple[P, T], int] = defaultdict(int)
    for record, cluster in predicted.items():
        if record not in truth:
            continue
        predicted_sizes[cluster] += 1
        true_sizes[truth[record]] += 1
        both[(cluster, truth[record])] += 1
    return PairMetrics(_pairs(both), _pairs(predicted_sizes), _pairs(true_sizes))
