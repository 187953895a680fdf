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
from gateway.recommendations.training.families import Fitted

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


def evaluate_fitted(
    fitted: Fitted,
    users: np.ndarray[Any, Any],
    seen: sp.csr_matrix,
    held: sp.csr_matrix,
    k: int,
    per_user: list[np.ndarray[Any, Any]] | None = None,
    block: int = 2000,
) -> tuple[float, float, float, set[int]]:
    """(precision@k, NDCG@k, recall@k, items recommended) of ``fitted`` for these
    users (rows of ``seen`` and ``held``, both users x items); each user's precision
    is appended to ``per_user`` when given."""
    totals = np.zeros(3)
    shown: set[int] = set()
    for start in range(0, len(users), block):
        rows = users[start : start + block]
        top = top_unseen(fitted.scores(rows), seen[rows], k)
        shown.update(np.unique(top).tolist())
        precision, recall, ndcg = score_rankings(top, held[rows], k)
        totals += (precision.sum(), ndcg.sum(), recall.sum())
        if per_user is not None:
            per_user.append(precision)
    n = max(len(users), 1)
    return float(totals[0] / n), float(totals[1] / n), float(totals[2] / n), shown


def top_unseen(scores: np.ndarray[Any, Any], seen: sp.csr_matrix, k: int) -> np.ndarray[Any, Any]:
    """Each row's ``k`` best columns, best first, never a seen one."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    rows, cols = seen.nonzero()
    scores[rows, cols] = -np.inf
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.zeros((scores.shape[0], 0), dtype=np.int64)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def held_matrix(
    held: dict[str, set[str]], users: Sequence[str], items: Sequence[str]
) -> sp.csr_matrix:
    """Users x items, 1 where the item was held out for the user."""
    at = {item: j for j, item in enumerate(items)}
    rows, cols = [], []
    for i, user in enumerate(users):
        for item in held.get(user, ()):
            if item in at:
                rows.append(i)
                cols.append(at[item])
    return sp.csr_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(len(users), len(items)), dtype=np.float64
    )


def describe_split(how: Split, folds: int) -> str:
    """The inner split, in words, for the selection's record."""
    if how == "random":
        twice = f", {folds} seeds" if folds > 1 else ""
        return f"a random 25 % of each user's training items held out{twice}"
    return "each user's latest 25 % of training interactions held out"
