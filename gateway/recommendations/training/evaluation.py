"""Offline evaluation: hold out a slice of each user's items, rank, and score the ranking.

Protocol (the one published comparisons on MovieLens use): per user, a random 25 %
of their distinct items (``random``, fixed seed) or the items first touched in the
latest 25 % of their interactions (``recent``) is held out; the models learn from the
rest; each user with a held-out item gets each model's top ``k`` among the items it
has not seen in training; precision@k, recall@k and NDCG@k are averaged over those
users, and coverage is the share of all items that reach anyone's top ``k``.

Side by side, on the same split: popularity; each peer family (EASE, ALS, item-kNN,
the gateway's item-to-item model) with the settings that validated best for it on
the training data alone (``selection``); and the selected model, the one a build
would serve. The held-out data is never used to choose anything.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.recommendations.interactions import Interaction
from gateway.recommendations.model import ModelParams, build_matrix
from gateway.recommendations.training.families import Blend, Fitted, TrainingData, thread_limits
from gateway.recommendations.training.metrics import (
    Split,
    evaluate_fitted,
    held_matrix,
    ranking_metrics,
    split,
)
from gateway.recommendations.training.selection import Selection, fit_setting, select
from gateway.recommendations.training.trials import Setting

__all__ = ["Metrics", "Report", "Row", "evaluate", "ranking_metrics", "split"]

PEERS = (
    ("popularity", "popularity"),
    ("EASE", "ease"),
    ("ALS", "als"),
    ("item-kNN", "knn"),
    ("item-to-item", "item_to_item"),
)


@dataclass(frozen=True, slots=True)
class Metrics:
    precision: float
    recall: float
    ndcg: float
    users: int
    coverage: float = 0.0
    fit_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    setting: str
    metrics: Metrics


@dataclass(frozen=True, slots=True)
class Report:
    rows: tuple[Row, ...]
    selection: Selection
    k: int
    split: Split
    seed: int
    interactions: int
    users: int
    items: int
    selection_seconds: float

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)

    @property
    def model(self) -> Metrics:
        """The selected model's figures."""
        found = self.row("selected")
        assert found is not None
        return found.metrics

    @property
    def popularity(self) -> Metrics:
        found = self.row("popularity")
        assert found is not None
        return found.metrics


def evaluate(
    interactions: Sequence[Interaction],
    params: ModelParams,
    *,
    how: Split,
    seed: int,
    k: int = 10,
    categories: dict[str, str] | None = None,
    threads: int = 1,
    families: Iterable[str] = ("popularity", "item_to_item", "ease", "als", "knn", "blend"),
) -> Report:
    """Every peer and the selected model on one split."""
    with thread_limits(threads):
        return _evaluate(interactions, params, how, seed, k, categories, threads, tuple(families))


def _evaluate(
    interactions: Sequence[Interaction],
    params: ModelParams,
    how: Split,
    seed: int,
    k: int,
    categories: dict[str, str] | None,
    threads: int,
    families: tuple[str, ...],
) -> Report:
    train, held = split(interactions, how, seed=seed)
    all_items = sorted({x.item for x in interactions})
    started = time.perf_counter()
    selection = select(
        train,
        params,
        how=how,
        seed=seed,
        items=all_items,
        categories=categories,
        k=k,
        threads=threads,
        families=families,
        refit=False,
    )
    selection_seconds = time.perf_counter() - started
    data = TrainingData(
        build_matrix(train, params, items=all_items),
        dict(categories or {}),
        params,
        threads=threads,
        seed=seed,
        keep_grams=False,
    )
    matrix = data.matrix
    users = [u for u in matrix.users if u in held]
    index = matrix.user_index
    rows_of_users = np.array([index[u] for u in users], dtype=np.int64)
    seen = matrix.weights > 0
    held_rows = held_matrix(held, matrix.users, matrix.items)

    fitted: dict[Setting, tuple[Fitted, float]] = {}

    def refit(setting: Setting) -> tuple[Fitted, float]:
        if setting not in fitted:
            if setting.parts:  # a blend: its parts are peers, fitted once
                parts = [refit(p) for p in setting.parts]
                weights = tuple(setting.options["weights"])
                blend = Blend(tuple(p[0] for p in parts), weights, params=setting.options)
                fitted[setting] = (blend, sum(p[1] for p in parts))
            else:
                began = time.perf_counter()
                fitted[setting] = (fit_setting(setting, data), time.perf_counter() - began)
        return fitted[setting]

    def measure(name: str, setting: Setting) -> Row:
        model, seconds = refit(setting)
        precision, ndcg, recall, shown = evaluate_fitted(model, rows_of_users, seen, held_rows, k)
        coverage = len(shown) / max(len(matrix.items), 1)
        metrics = Metrics(precision, recall, ndcg, len(users), coverage, seconds)
        return Row(name, setting.label(), metrics)

    rows = [
        measure(name, selection.best[family].setting)
        for name, family in PEERS
        if family in selection.best
    ]
    rows.append(measure("selected", selection.chosen))
    return Report(
        tuple(rows),
        selection,
        k,
        how,
        seed,
        len(interactions),
        len(matrix.users),
        len(matrix.items),
        selection_seconds,
    )
