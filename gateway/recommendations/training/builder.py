"""``gateway recs build``: choose and fit a model on the history, store what serving reads.

A build reads every product interaction (``history``; with ``--interactions``, a file's
too), chooses the model that validates best on that history alone (``selection``:
popularity, the item-to-item model, EASE, ALS, item-kNN or a blend), fits it on all of
it, and replaces the stored lists, popularity, neighbours and the choice itself
(``store``) in one transaction. Whatever model wins, serving reads the same rows: each
customer's ranked candidates, precomputed here, so serving never computes a model.
Run it on a schedule (cron, a Kubernetes CronJob): a build over 1,000 customers and
200 products takes a few seconds.
"""

from __future__ import annotations

import resource
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from gateway.recommendations.consent import personalised_customers
from gateway.recommendations.model import (
    Interaction,
    Matrix,
    ModelParams,
    build_matrix,
    recent_popularity,
)
from gateway.recommendations.store import Candidate, CustomerList, ModelRows, RecommendationStore
from gateway.recommendations.training.families import Fitted, TrainingData, thread_limits
from gateway.recommendations.training.history import History, read_history
from gateway.recommendations.training.history_file import UNRESOLVED_PREFIX
from gateway.recommendations.training.selection import ALL_FAMILIES, fit_setting, select
from gateway.recommendations.training.trials import Setting

# The gateway's events: recency matters (tastes and stock move), purchases say most.
GATEWAY_PARAMS = ModelParams(half_life_days=30.0)
LIST_SIZE = 50  # candidates stored per customer: room for stock and purchase filters
NEIGHBOURS_STORED = 20  # per product, for send-time context
_ANCHOR_NEIGHBOURS = 100  # per product, to name the reason of a candidate
TRENDING_DAYS = 14.0
_USERS_PER_BLOCK = 2000
_DENSE_ITEMS = 5000  # items x items as a dense array for the reasons: 200 MB at most
_SEED = 42


@dataclass(frozen=True, slots=True)
class BuildSummary:
    events: int
    interactions: int
    customers: int
    lists: int
    products: int
    neighbours: int
    seconds: float
    model: str = ""
    reason: str = ""
    peak_mb: float = 0.0  # the process's peak resident memory once the build is done

    def line(self) -> str:
        return (
            f"read {self.events} events ({self.interactions} interactions, "
            f"{self.customers} customers); stored {self.lists} lists, {self.products} "
            f"products, {self.neighbours} neighbour links in {self.seconds:.1f} s; "
            f"peak memory {self.peak_mb:,.0f} MB\n"
            f"model: {self.model}\nwhy: {self.reason}"
        )


async def build(
    store: RecommendationStore,
    *,
    params: ModelParams = GATEWAY_PARAMS,
    categories: Mapping[str, str] | None = None,
    extra: Sequence[Interaction] = (),
    threads: int = 1,
    families: Sequence[str] = ALL_FAMILIES,
) -> BuildSummary:
    """Rebuild and store the model; ``categories`` (product id -> category, e.g. from
    the shop's catalogue) wins over what the events say; ``extra`` interactions (from a
    history file, users already resolved to customer ids) join the stored ones."""
    started = time.perf_counter()
    history = await read_history(store.sessions)
    history.interactions.extend(extra)
    known = {**history.categories, **(categories or {})}
    async with store.sessions() as session:
        allowed = await personalised_customers(session)
    rows = compute(
        history, params, known, {str(c) for c in allowed}, threads=threads, families=families
    )
    written = await store.replace(rows)
    return BuildSummary(
        events=history.events_read,
        interactions=len(history.interactions),
        customers=len({x.user for x in history.interactions}),
        lists=written,
        products=len(rows.items),
        neighbours=len(rows.neighbours),
        seconds=time.perf_counter() - started,
        model=rows.label,
        reason=rows.reason,
        peak_mb=peak_rss_mb(),
    )


def peak_rss_mb() -> float:
    """The process's peak resident memory in MB (Linux reports kilobytes, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def compute(
    history: History,
    params: ModelParams,
    categories: Mapping[str, str],
    allowed: set[str],
    *,
    threads: int = 1,
    families: Sequence[str] = ALL_FAMILIES,
) -> ModelRows:
    """The rows a build stores (pure: no I/O, so it is tested and timed on its own).
    ``families`` narrows the candidates (tests, or an operator who wants one)."""
    with thread_limits(threads):
        return _compute(history, params, categories, allowed, threads, families)


def _compute(
    history: History,
    params: ModelParams,
    categories: Mapping[str, str],
    allowed: set[str],
    threads: int,
    families: Sequence[str],
) -> ModelRows:
    interactions = history.interactions
    matrix = build_matrix(interactions, params)
    data = TrainingData(
        matrix, dict(categories), params, threads=threads, seed=_SEED, keep_grams=False
    )
    # A shop predicts what comes next: validate on each customer's latest interactions.
    selection = select(
        interactions,
        params,
        how="recent",
        seed=_SEED,
        categories=dict(categories),
        threads=threads,
        families=families,
        refit=False,
    )
    model = fit_setting(selection.chosen, data)
    neighbours = model.neighbours(_ANCHOR_NEIGHBOURS)
    if neighbours.nnz == 0:  # popularity won: context still needs related products
        neighbours = fit_setting(Setting.of("item_to_item"), data).neighbours(_ANCHOR_NEIGHBOURS)
    trending = recent_popularity(matrix, interactions, TRENDING_DAYS)
    items = [
        {
            "product_id": item,
            "category": categories.get(item),
            "popularity": float(data.popularity[k]),
            "trending": float(trending[k]),
        }
        for k, item in enumerate(matrix.items)
    ]
    record = selection.record()
    return ModelRows(
        lists=_lists(model, neighbours, data, interactions, categories, allowed),
        items=items,
        neighbours=_neighbours(matrix, neighbours),
        label=selection.chosen.label(),
        reason=selection.reason(),
        selection=record,
    )


def _lists(
    model: Fitted,
    neighbours: sp.csr_matrix,
    data: TrainingData,
    interactions: list[Interaction],
    categories: Mapping[str, str],
    allowed: set[str],
) -> dict[uuid.UUID, CustomerList]:
    matrix = data.matrix
    purchased: dict[str, set[str]] = {}
    for x in interactions:
        if x.kind == "purchase":
            purchased.setdefault(x.user, set()).add(x.item)
    lists: dict[uuid.UUID, CustomerList] = {}
    rows = np.array([k for k, user in enumerate(matrix.users) if user in allowed], np.int64)
    # Reasons look up (the customer's products x their candidates) per customer: dense
    # when that fits easily, which makes each look-up a plain index.
    related: Any = neighbours.toarray() if data.n_items <= _DENSE_ITEMS else neighbours
    item_category = [categories.get(item) for item in matrix.items]
    weights = matrix.weights
    for start in range(0, len(rows), _USERS_PER_BLOCK):
        block = rows[start : start + _USERS_PER_BLOCK]
        scores = model.scores(block)
        keep = min(LIST_SIZE, scores.shape[1])
        if keep == 0:
            continue
        top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        ranked_block = np.take_along_axis(top, order, axis=1)
        for offset, k in enumerate(block):
            user = matrix.users[k]
            bought = purchased.get(user, set())
            mine = weights.indices[weights.indptr[k] : weights.indptr[k + 1]]
            mine_weights = weights.data[weights.indptr[k] : weights.indptr[k + 1]]
            found = _candidates(
                matrix,
                related,
                mine,
                mine_weights,
                ranked_block[offset],
                scores[offset],
                bought,
                item_category,
                model.family,
            )
            lists[uuid.UUID(user)] = CustomerList(found, frozenset(bought))
    for user in matrix.users:
        if user.startswith(UNRESOLVED_PREFIX):
            continue  # a file's user that is no stored customer: nobody to serve
        if user not in allowed:  # no profiling: only what they bought, for the filter
            lists[uuid.UUID(user)] = CustomerList((), frozenset(purchased.get(user, set())))
    return lists


def _candidates(
    matrix: Matrix,
    related: Any,
    mine: Any,
    mine_weights: Any,
    ranked: Any,
    scores: Any,
    bought: set[str],
    item_category: list[str | None],
    family: str,
) -> tuple[Candidate, ...]:
    """The customer's best ``LIST_SIZE`` products, each with the reason a person reads
    (bought ones stay: serving drops them unless asked not to)."""
    ranked = ranked[np.isfinite(scores[ranked])]
    if family != "popularity":
        positive = ranked[scores[ranked] > 0]
        ranked = positive if len(positive) else ranked[: LIST_SIZE // 5]
    if not len(ranked):
        return ()
    anchors = np.zeros(len(ranked), np.int64)
    strongest = np.zeros(len(ranked))
    if len(mine) and family != "popularity":
        # The customer's product that most relates to each candidate names the reason.
        part = related[np.ix_(mine, ranked)]
        contributions = (part.toarray() if sp.issparse(part) else part) * mine_weights[:, None]
        anchors, strongest = contributions.argmax(axis=0), contributions.max(axis=0)
    top = float(scores[ranked[0]])
    # Scores are comparable within one list; scaled so the best is 1.
    scaled = (scores[ranked] / top if top > 0 else np.zeros(len(ranked))).tolist()
    anchor_items = mine[anchors].tolist() if len(mine) else [0] * len(ranked)
    items = matrix.items
    candidates = []
    for j, score, anchor_at, strength in zip(
        ranked.tolist(), scaled, anchor_items, strongest.tolist(), strict=True
    ):
        category = item_category[j]
        if strength > 0:
            anchor: str | None = items[anchor_at]
            reason = "bought_with" if anchor in bought else "viewed_with"
        else:
            anchor, reason = None, "popular_in" if category else "trending"
        candidates.append(Candidate(items[j], score, category, reason, anchor))
    return tuple(candidates)


def _neighbours(matrix: Matrix, similarity: sp.csr_matrix) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(similarity.shape[0]):
        start, stop = similarity.indptr[i], similarity.indptr[i + 1]
        cols, values = similarity.indices[start:stop], similarity.data[start:stop]
        for k in np.argsort(-values, kind="stable")[:NEIGHBOURS_STORED]:
            if values[k] > 0:
                rows.append(
                    {
                        "product_id": matrix.items[i],
                        "neighbour_id": matrix.items[cols[k]],
                        "score": float(values[k]),
                    }
                )
    return rows
