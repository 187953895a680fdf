"""Offline evaluation: hold out a slice of each user's items, rank, and score the ranking.

Protocol (the one published comparisons on MovieLens use): per user, a random 25 %
of their distinct items (``random``, fixed seed) or the items first touched in the
latest 25 % of their interactions (``recent``) is held out; the model learns from the
rest; each user with a held-out item gets its top ``k`` among the items it has not
seen in training; precision@k, recall@k and NDCG@k are averaged over those users.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from gateway.recommendations.model import (
    Interaction,
    Model,
    ModelParams,
    build_matrix,
    top_items,
)

Split = Literal["random", "recent"]
_USERS_PER_BLOCK = 2000


@dataclass(frozen=True, slots=True)
class Metrics:
    precision: float
    recall: float
    ndcg: float
    users: int


@dataclass(frozen=True, slots=True)
class Report:
    model: Metrics
    popularity: Metrics
    k: int
    split: Split
    seed: int
    interactions: int
    users: int
    items: int


def split(
    interactions: Sequence[Interaction], how: Split, *, seed: int, test_share: float = 0.25
) -> tuple[list[Interaction], dict[str, set[str]]]:
    """(training interactions, held-out items per user). Users with one item keep it."""
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


def evaluate(
    interactions: Sequence[Interaction],
    params: ModelParams,
    *,
    how: Split,
    seed: int,
    k: int = 10,
    categories: dict[str, str] | None = None,
) -> Report:
    """The model against the popularity baseline on one split."""
    train, held = split(interactions, how, seed=seed)
    all_items = sorted({x.item for x in interactions})
    matrix = build_matrix(train, params, items=all_items)
    model = Model.fit(matrix, params, categories)
    seen = (matrix.weights > 0).astype(np.float64).tocsr()
    users = [u for u in matrix.users if u in held]
    index = matrix.user_index
    rows = np.array([index[u] for u in users], dtype=np.int64)
    popular = np.broadcast_to(model.popularity, (1, len(matrix.items)))
    totals = {"model": np.zeros(3), "popularity": np.zeros(3)}
    for start in range(0, len(rows), _USERS_PER_BLOCK):
        block = rows[start : start + _USERS_PER_BLOCK]
        exclude = seen[block]
        _, final = model.scores(matrix.weights[block])
        ranked = {
            "model": top_items(final, exclude, k),
            "popularity": top_items(np.repeat(popular, len(block), axis=0), exclude, k),
        }
        for name, top in ranked.items():
            for offset, row in enumerate(top):
                names = [matrix.items[i] for i in row]
                totals[name] += ranking_metrics(names, held[users[start + offset]], k)
    n = max(len(users), 1)
    model_m, pop_m = (
        Metrics(
            precision=float(totals[name][0]) / n,
            recall=float(totals[name][1]) / n,
            ndcg=float(totals[name][2]) / n,
            users=len(users),
        )
        for name in ("model", "popularity")
    )
    return Report(
        model_m,
        pop_m,
        k,
        how,
        seed,
        len(interactions),
        len(matrix.users),
        len(matrix.items),
    )
