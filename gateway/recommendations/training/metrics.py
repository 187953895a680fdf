"""The evaluation protocol's parts: how held-out data is split off, and how rankings score.

Shared by offline evaluation (``evaluation``) and model selection (``selection``), which
validates on an inner split made the same way as the outer one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from gateway.recommendations.interactions import Interaction

Split = Literal["random", "recent"]


def split(
    interactions: Sequence[Interaction], how: Split, *, seed: int, test_share: float = 0.25
) -> tuple[list[Interaction], dict[str, set[str]]]:
    """(training interactions, held-out items per user). Users with one item keep it.

    ``random``: a random ``test_share`` of each user's distinct items (fixed seed);
    ``recent``: the items first touched in the user's latest ``test_share`` of
    interactions (an item touched before as well stays in training, and is not held out).
    """
    by_user: dict[str, list[Interaction]] = {}
    for x in interactions:
        by_user.setdefault(x.user, []).append(x)
    rng = random.Random(seed)
    train: list[Interaction] = []
    held: dict[str, set[str]] = {}
    for user in sorted(by_user):
        events = by_user[user]
        items = list(dict.fromkeys(x.item for x in events))
        count = round(len(items) * test_share)
        if len(items) < 2 or count == 0:
            train.extend(events)
            continue
        if how == "random":
            rng.shuffle(items)
            test = set(items[:count])
            train.extend(x for x in events if x.item not in test)
        else:
            ordered = sorted(events, key=lambda x: x.at)
            cut = len(ordered) - max(1, round(len(ordered) * test_share))
            train.extend(ordered[:cut])
            test = {x.item for x in ordered[cut:]} - {x.item for x in ordered[:cut]}
        if test:
            held[user] = test
    return train, held


def ranking_metrics(
    ranked: Sequence[str], relevant: set[str], k: int
) -> tuple[float, float, float]:
    """(precision@k, recall@k, NDCG@k) of one ranking against one user's held-out items."""
    gains = [1.0 if item in relevant else 0.0 for item in ranked[:k]]
    hits = sum(gains)
    dcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(gains))
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    return hits / k, hits / len(relevant), dcg / ideal if ideal else 0.0


def score_rankings(
    top: np.ndarray[Any, Any], held: sp.csr_matrix, k: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Per user (row): precision@k, recall@k and NDCG@k of ``top`` (item columns, best
    first) against ``held`` (users x items, 1 where held out); ``ranking_metrics`` on arrays."""
    n = top.shape[0]
    if n == 0:
        empty = np.zeros(0)
        return empty, empty, empty
    gains = np.asarray(held[np.repeat(np.arange(n), top.shape[1]), top.ravel()]).reshape(top.shape)
    gains = (gains > 0).astype(np.float64)
    relevant = np.asarray(held.getnnz(axis=1), dtype=np.float64)
    discount = 1.0 / np.log2(np.arange(top.shape[1]) + 2.0)
    dcg = gains @ discount
    cumulative = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])
    ideal = cumulative[np.minimum(relevant, k).astype(np.int64)]
    precision = gains.sum(axis=1) / k
    recall = gains.sum(axis=1) / np.maximum(relevant, 1.0)
    ndcg = np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)
    return precision, recall, ndcg
