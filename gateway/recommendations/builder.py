"""``gateway recs build``: learn the model from the stored events and store what serving reads.

A build reads every product interaction (``history``), fits the model (``model``) and
replaces the stored lists, popularity and neighbours (``store``) in one transaction.
Run it on a schedule (cron, a Kubernetes CronJob): a build over 1,000 customers takes
about a second; serving never computes a model.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from gateway.recommendations.consent import personalised_customers
from gateway.recommendations.history import History, read_history
from gateway.recommendations.model import (
    Interaction,
    Matrix,
    Model,
    ModelParams,
    build_matrix,
    recent_popularity,
)
from gateway.recommendations.store import Candidate, CustomerList, ModelRows, RecommendationStore

# The gateway's events: recency matters (tastes and stock move), purchases say most.
GATEWAY_PARAMS = ModelParams(half_life_days=30.0)
LIST_SIZE = 50  # candidates stored per customer: room for stock and purchase filters
NEIGHBOURS_STORED = 20  # per product, for send-time context
TRENDING_DAYS = 14.0


@dataclass(frozen=True, slots=True)
class BuildSummary:
    events: int
    interactions: int
    customers: int
    lists: int
    products: int
    neighbours: int
    seconds: float

    def line(self) -> str:
        return (
            f"read {self.events} events ({self.interactions} interactions, "
            f"{self.customers} customers); stored {self.lists} lists, {self.products} "
            f"products, {self.neighbours} neighbour links in {self.seconds:.1f} s"
        )


async def build(
    store: RecommendationStore,
    *,
    params: ModelParams = GATEWAY_PARAMS,
    categories: Mapping[str, str] | None = None,
) -> BuildSummary:
    """Rebuild and store the model; ``categories`` (product id -> category, e.g. from
    the shop's catalogue) wins over what the events say."""
    started = time.perf_counter()
    history = await read_history(store.sessions)
    known = {**history.categories, **(categories or {})}
    async with store.sessions() as session:
        allowed = await personalised_customers(session)
    rows = compute(history, params, known, {str(c) for c in allowed})
    written = await store.replace(rows)
    return BuildSummary(
        events=history.events_read,
        interactions=len(history.interactions),
        customers=len({x.user for x in history.interactions}),
        lists=written,
        products=len(rows.items),
        neighbours=len(rows.neighbours),
        seconds=time.perf_counter() - started,
    )


def compute(
    history: History, params: ModelParams, categories: Mapping[str, str], allowed: set[str]
) -> ModelRows:
    """The rows a build stores (pure: no I/O, so it is tested and timed on its own)."""
    matrix = build_matrix(history.interactions, params)
    model = Model.fit(matrix, params, dict(categories))
    trending = recent_popularity(matrix, history.interactions, TRENDING_DAYS)
    items = [
        {
            "product_id": item,
            "category": categories.get(item),
            "popularity": float(model.popularity[k]),
            "trending": float(trending[k]),
        }
        for k, item in enumerate(matrix.items)
    ]
    return ModelRows(
        lists=_lists(model, history.interactions, categories, allowed),
        items=items,
        neighbours=_neighbours(matrix, model.similarity),
    )


def _lists(
    model: Model,
    interactions: list[Interaction],
    categories: Mapping[str, str],
    allowed: set[str],
) -> dict[uuid.UUID, CustomerList]:
    matrix = model.matrix
    purchased: dict[str, set[str]] = {}
    for x in interactions:
        if x.kind == "purchase":
            purchased.setdefault(x.user, set()).add(x.item)
    lists: dict[uuid.UUID, CustomerList] = {}
    rows = [k for k, user in enumerate(matrix.users) if user in allowed]
    similar, final = (
        model.scores(matrix.weights[rows]) if rows else (np.zeros((0, 0)), np.zeros((0, 0)))
    )
    for offset, k in enumerate(rows):
        user = matrix.users[k]
        lists[uuid.UUID(user)] = CustomerList(
            _candidates(model, k, similar[offset], final[offset], purchased.get(user, set())),
            frozenset(purchased.get(user, set())),
        )
    for user in matrix.users:
        if user not in allowed:  # no profiling: only what they bought, for the filter
            lists[uuid.UUID(user)] = CustomerList((), frozenset(purchased.get(user, set())))
    return lists


def _candidates(
    model: Model, row: int, similar: Any, final: Any, bought: set[str]
) -> tuple[Candidate, ...]:
    matrix = model.matrix
    ranked = [j for j in np.argsort(-final, kind="stable")[:LIST_SIZE] if final[j] > 0]
    if not ranked:
        return ()
    user_row = matrix.weights[row]
    mine = user_row.indices
    # The customer's item that contributes most to each candidate names the reason.
    contributions = sp.csr_matrix(model.similarity[mine][:, ranked]).toarray()
    contributions *= user_row.data[:, None]
    anchors = contributions.argmax(axis=0) if len(mine) else np.zeros(len(ranked), np.int64)
    weight = model.params.category_weight if model.categories else 0.0
    best = max(float(similar.max()), 1e-12)
    candidates = []
    for position, j in enumerate(ranked):
        item = matrix.items[j]
        from_similarity = (1.0 - weight) * float(similar[j]) / best
        if len(mine) and from_similarity >= float(final[j]) / 2:
            anchor = matrix.items[mine[anchors[position]]]
            reason = "bought_with" if anchor in bought else "viewed_with"
        else:
            anchor, reason = None, "popular_in" if model.categories else "trending"
        category = model.categories[model.category_of[j]] if model.category_of[j] >= 0 else None
        candidates.append(Candidate(item, float(final[j]), category, reason, anchor))
    return tuple(candidates)


def _neighbours(matrix: Matrix, similarity: sp.csr_matrix) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(similarity.shape[0]):
        start, stop = similarity.indptr[i], similarity.indptr[i + 1]
        cols, values = similarity.indices[start:stop], similarity.data[start:stop]
        for k in np.argsort(-values, kind="stable")[:NEIGHBOURS_STORED]:
            rows.append(
                {
                    "product_id": matrix.items[i],
                    "neighbour_id": matrix.items[cols[k]],
                    "score": float(values[k]),
                }
            )
    return rows
