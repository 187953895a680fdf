"""The candidate model families: each fits on a users x items matrix and scores its users.

Every family answers the same two questions, so selection, evaluation and the build
treat them alike:

- ``scores(users)``: dense scores of these training users (row numbers) over every item;
- ``neighbours(k)``: items x items, each item's ``k`` strongest related items, which
  name the reasons ("because you viewed X") and serve send-time context whatever
  family was chosen.

Families (``FAMILIES``): ``popularity``; ``item_to_item``, the gateway's own
co-occurrence model (``model``); ``ease``, EASE^R (Steck 2019), a closed form
``B = I - P / diag(P)`` with ``P = (X'X + lambda I)^-1``; ``als``, implicit's
alternating least squares (conjugate gradient, CPU); ``knn``, implicit's item
neighbourhoods (cosine or BM25 weighted); and ``blend``, fitted candidates' scores
standardised per user and mixed.

Memory and time: EASE inverts a dense items x items matrix in place (Cholesky, float32
past 1,000 items): past ``EASE_SEARCH_ITEMS`` its Gram matrix is computed for each fit
and overwritten by it, 4 bytes x items^2 (below, kept for the ridges tried, 8), and
about items^3 operations per ridge (0.04 GB and 0.3 s CPU at 3,000 items; 0.33 GB and
9 s at 9,066; 0.9 GB and, by the cube, 40 s at 15,000). So it models at most
``EASE_MAX_ITEMS`` items: beyond that, the most popular ones (where most of any top
ten comes from), and ranks the rest last; its ridge is searched on the
``EASE_SEARCH_ITEMS`` most popular and only refined on all it models
(``search.search_ease``). The other families' memory grows with the interactions and
with items x factors (ALS) or items x K (kNN, K capped) only, so on a long catalogue
validation picks ALS or kNN, or a blend in which they rank the long tail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from gateway.recommendations.model import Matrix, Model, ModelParams, popularity
from gateway.recommendations.training.ease import ease_weights

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Params = Mapping[str, Any]

FAMILIES = ("popularity", "item_to_item", "ease", "als", "knn", "blend")
EASE_MAX_ITEMS = 15_000
EASE_SEARCH_ITEMS = 3_000
# Cells of a dense items x items block when each row's top k is taken (model._BLOCK_CELLS).
_NEIGHBOUR_BLOCK_CELLS = 4_000_000


def thread_limits(threads: int) -> Any:
    """A context that caps BLAS and OpenMP threads at ``threads`` for every library the
    families use (threadpoolctl): a build must not take the cores of the event loops
    beside it, and ALS is 10x slower when OpenBLAS threads fight its own. The libraries
    are loaded first: threadpoolctl limits only those already loaded."""
    import implicit.cpu.als
    import implicit.nearest_neighbours  # noqa: F401
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


class Fitted(Protocol):
    family: str
    params: Params

    def scores(self, users: IntArray) -> FloatArray: ...

    def neighbours(self, k: int) -> sp.csr_matrix: ...


@dataclass(eq=False)
class TrainingData:
    """One training matrix and what the families derive from it (computed once, shared
    by every candidate of a grid)."""

    matrix: Matrix
    categories: dict[str, str] = field(default_factory=dict)
    item_params: ModelParams = field(default_factory=ModelParams)
    threads: int = 1
    seed: int = 42
    ease_max_items: int = EASE_MAX_ITEMS
    ease_search_items: int = EASE_SEARCH_ITEMS
    # A search keeps each Gram matrix of up to ``ease_search_items`` for every ridge it
    # tries (cheap to keep, and its grid has ten). Larger ones, and any in a final fit,
    # are computed for each fit and overwritten by it: one items x items array instead
    # of two (a sparse X'X costs a second; the inverse ten at 9,066 items).
    keep_grams: bool = True

    def keeps_gram(self, items: int) -> bool:
        return self.keep_grams and items <= self.ease_search_items

    @property
    def n_items(self) -> int:
        return len(self.matrix.items)

    @cached_property
    def binary(self) -> sp.csr_matrix:
        found: sp.csr_matrix = (self.matrix.weights > 0).astype(np.float32).tocsr()
        return found

    @cached_property
    def graded(self) -> sp.csr_matrix:
        """Weights on a log scale: a purchase says more than a view, ten views not ten
        times more."""
        found = self.matrix.weights.astype(np.float32).tocsr()
        found.data = np.log1p(found.data).astype(np.float32)
        return found

    @cached_property
    def is_binary(self) -> bool:
        data = self.matrix.weights.data
        return bool(data.size == 0 or np.all(data == data[0]))

    def view(self, name: str) -> sp.csr_matrix:
        return self.graded if name == "graded" and not self.is_binary else self.binary

    @cached_property
    def popularity(self) -> FloatArray:
        return popularity(self.matrix.weights)

    @cached_property
    def _grams(self) -> dict[tuple[str, int], npt.NDArray[Any]]:
        return {}

    def ease_items(self, limit: int | None = None) -> IntArray:
        """The items EASE models: all, or the ``limit`` (at most ``ease_max_items``) most
        popular."""
        count = min(self.ease_max_items, limit if limit is not None else self.n_items)
        if self.n_items <= count:
            return np.arange(self.n_items, dtype=np.int64)
        order = np.argsort(-self.popularity, kind="stable")[:count]
        return np.sort(order).astype(np.int64)

    def gram(self, view: str, items: IntArray) -> npt.NDArray[Any]:
        """X'X of one view over ``items`` (from ``ease_items``), computed once per size
        (float32 past 1,000 items: half the memory and time of the inverse, and rankings
        do not need more)."""
        key = ("binary" if self.is_binary else view, len(items))
        if key in self._grams:
            return self._grams[key]
        x = self.view(key[0])[:, items]
        dtype = np.float64 if len(items) <= 1000 else np.float32
        found = np.asarray((x.T @ x).toarray(), dtype=dtype)
        if self.keeps_gram(len(items)):
            self._grams[key] = found
        return found

    def forget_grams(self) -> None:
        """Drop the Gram matrices (the largest thing a search keeps) once EASE is done."""
        self._grams.clear()


def _top_k_rows(dense: npt.NDArray[Any], k: int, offset: int) -> tuple[Any, Any, Any]:
    """(rows, cols, values) of each row's ``k`` largest positive entries."""
    k = min(k, dense.shape[1])
    if k <= 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    top = np.argpartition(-dense, k - 1, axis=1)[:, :k]
    picked = np.take_along_axis(dense, top, axis=1)
    mask = picked > 0
    rows = (np.arange(dense.shape[0])[:, None] + offset + np.zeros_like(top))[mask]
    return rows, top[mask], picked[mask]


def _sparse_top_k(matrix: sp.csr_matrix | npt.NDArray[Any], k: int) -> sp.csr_matrix:
    """Each row's ``k`` strongest entries of an items x items matrix, diagonal removed."""
    n = matrix.shape[0]
    block = max(1, _NEIGHBOUR_BLOCK_CELLS // max(n, 1))
    parts: list[tuple[Any, Any, Any]] = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        chunk: Any = matrix[start:stop]
        dense = np.array(chunk.toarray() if sp.issparse(chunk) else chunk, dtype=np.float64)
        dense[np.arange(stop - start), np.arange(start, stop)] = 0.0
        parts.append(_top_k_rows(dense, k, start))
    if not parts:
        return sp.csr_matrix((n, n))
    rows, cols, values = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return sp.csr_matrix((values, (rows, cols)), shape=(n, n))


@dataclass(eq=False)
class Popularity:
    data: TrainingData
    family: str = "popularity"
    params: Params = field(default_factory=dict)

    def scores(self, users: IntArray) -> FloatArray:
        return np.repeat(self.data.popularity[None, :], len(users), axis=0)

    def neighbours(self, k: int) -> sp.csr_matrix:
        return sp.csr_matrix((self.data.n_items, self.data.n_items))


@dataclass(eq=False)
class ItemToItem:
    data: TrainingData
    model: Model
    family: str = "item_to_item"
    params: Params = field(default_factory=dict)

    def scores(self, users: IntArray) -> FloatArray:
        return self.model.scores(self.data.matrix.weights[users])[1]

    def neighbours(self, k: int) -> sp.csr_matrix:
        return _sparse_top_k(self.model.similarity, k)


@dataclass(eq=False)
class ItemWeights:
    """A family whose user scores are the user's row times an items x items matrix
    (EASE, item-kNN)."""

    data: TrainingData
    weights: sp.csr_matrix | npt.NDArray[Any]
    view: str
    family: str
    params: Params

    def scores(self, users: IntArray) -> FloatArray:
        rows = self.data.view(self.view)[users]
        found = rows @ self.weights
        dense = found.toarray() if sp.issparse(found) else found
        return np.asarray(dense, dtype=np.float64)

    def neighbours(self, k: int) -> sp.csr_matrix:
        return _sparse_top_k(self.weights, k)


@dataclass(eq=False)
class PartialItemWeights(ItemWeights):
    """EASE over the most popular items only: the others rank after every one of them."""

    modelled: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))

    def scores(self, users: IntArray) -> FloatArray:
        rows = self.data.view(self.view)[users][:, self.modelled]
        part = np.asarray(rows @ self.weights, dtype=np.float64)
        floor = part.min(axis=1, keepdims=True) - 1.0 if part.size else np.zeros((len(users), 1))
        found = np.repeat(floor, self.data.n_items, axis=1)
        found[:, self.modelled] = part
        return found

    def neighbours(self, k: int) -> sp.csr_matrix:
        inner = _sparse_top_k(self.weights, k).tocoo()
        n = self.data.n_items
        return sp.csr_matrix(
            (inner.data, (self.modelled[inner.row], self.modelled[inner.col])), shape=(n, n)
        )


@dataclass(eq=False)
class Factors:
    """ALS: a user's score for an item is the dot product of their factors."""

    data: TrainingData
    users: npt.NDArray[Any]
    items: npt.NDArray[Any]
    family: str
    params: Params

    def scores(self, users: IntArray) -> FloatArray:
        return np.asarray(self.users[users] @ self.items.T, dtype=np.float64)

    def neighbours(self, k: int) -> sp.csr_matrix:
        norms = np.linalg.norm(self.items, axis=1)
        unit = self.items / np.maximum(norms, 1e-12)[:, None]
        n = unit.shape[0]
        block = max(1, _NEIGHBOUR_BLOCK_CELLS // max(n, 1))
        parts = []
        for start in range(0, n, block):
            stop = min(n, start + block)
            dense = np.asarray(unit[start:stop] @ unit.T, dtype=np.float64)
            dense[np.arange(stop - start), np.arange(start, stop)] = 0.0
            parts.append(_top_k_rows(dense, k, start))
        rows, cols, values = (np.concatenate([p[i] for p in parts]) for i in range(3))
        return sp.csr_matrix((values, (rows, cols)), shape=(n, n))


def standardised(scores: FloatArray) -> FloatArray:
    mean = scores.mean(axis=1, keepdims=True)
    spread = scores.std(axis=1, keepdims=True)
    found: FloatArray = (scores - mean) / np.maximum(spread, 1e-12)
    return found


@dataclass(eq=False)
class Blend:
    """Several fitted candidates' scores, each standardised per user, mixed by weight.

    Standardising (mean 0, spread 1 over the items, per user) puts an ALS dot product
    and an EASE sum on one scale; the weights come from validation."""

    members: tuple[Fitted, ...]
    weights: tuple[float, ...]
    family: str = "blend"
    params: Params = field(default_factory=dict)

    def scores(self, users: IntArray) -> FloatArray:
        total = np.zeros((len(users), 0))
        for member, weight in zip(self.members, self.weights, strict=True):
            part = weight * standardised(member.scores(users))
            total = part if total.shape[1] == 0 else total + part
        return total

    def neighbours(self, k: int) -> sp.csr_matrix:
        """The heaviest member's: reasons name what most drives the blend."""
        heaviest = max(range(len(self.members)), key=lambda n: self.weights[n])
        return self.members[heaviest].neighbours(k)


def fit(family: str, params: Params, data: TrainingData) -> Fitted:
    """Fit one family with these settings (BLAS threads: limit them around the call)."""
    if family == "popularity":
        return Popularity(data)
    if family == "item_to_item":
        model = Model.fit(data.matrix, data.item_params, data.categories or None)
        return ItemToItem(data, model, params=dict(params))
    if family == "ease":
        return _fit_ease(params, data)
    if family == "als":
        return _fit_als(params, data)
    if family == "knn":
        return _fit_knn(params, data)
    raise ValueError(f"unknown model family {family!r}")


def _fit_ease(params: Params, data: TrainingData) -> Fitted:
    view = str(params.get("input", "binary"))
    limit = params.get("items")
    modelled = data.ease_items(int(limit) if limit is not None else None)
    gram = data.gram(view, modelled)
    weights = ease_weights(gram, float(params["l2"]), overwrite=not data.keeps_gram(len(modelled)))
    del gram
    if len(modelled) == data.n_items:
        return ItemWeights(data, weights, view, "ease", dict(params))
    return PartialItemWeights(data, weights, view, "ease", dict(params), modelled)


def _fit_als(params: Params, data: TrainingData) -> Fitted:
    from implicit.cpu.als import AlternatingLeastSquares

    view = str(params.get("input", "binary"))
    model = AlternatingLeastSquares(
        factors=int(params["factors"]),
        regularization=float(params["regularization"]),
        alpha=float(params["alpha"]),
        iterations=int(params.get("iterations", 15)),
        random_state=data.seed,
        num_threads=data.threads,
    )
    model.fit(data.view(view), show_progress=False)
    return Factors(
        data,
        np.asarray(model.user_factors),
        np.asarray(model.item_factors),
        "als",
        dict(params),
    )


def _fit_knn(params: Params, data: TrainingData) -> Fitted:
    from implicit.nearest_neighbours import ItemItemRecommender, bm25_weight

    view = str(params.get("input", "binary"))
    x = data.view(view)
    if params.get("weighting") == "bm25":
        # BM25 down-weights heavy users' and popular items' co-occurrences.
        weighted = sp.csr_matrix(bm25_weight(x.T.tocsr(), K1=1.2, B=0.75).T, dtype=np.float64)
    else:  # cosine: each item's column to unit length, so X'X is the cosine
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
        weighted = sp.csr_matrix(x @ sp.diags(1.0 / np.maximum(norms, 1e-12)), dtype=np.float64)
    # K counts the item itself, which is dropped below: ask for one more.
    model = ItemItemRecommender(K=int(params["neighbours"]) + 1, num_threads=data.threads)
    model.fit(weighted, show_progress=False)
    similarity = sp.csr_matrix(model.similarity, dtype=np.float64)
    similarity.setdiag(0.0)
    similarity.eliminate_zeros()
    return ItemWeights(data, similarity, view, "knn", dict(params))
