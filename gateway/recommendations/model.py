"""The recommendation model: item-to-item similarity from co-occurrence, and popularity.

One implementation serves the gateway (``builder``) and the offline evaluation
(``evaluation``), so the figures ``gateway recs eval`` prints are the model's own.

Similarity of a source item i to a target item j, over the user-item weight matrix
X (one row per user; a cell sums each interaction's type weight times its recency
decay)::

    X'    = X / activity(u) ** user_norm          # heavy users say less per item
    C     = X'.T @ X'                              # co-occurrence, i != j
    n(i)  = sum_u X'[ui] ** 2
    S[ij] = C[ij] / (n(i) ** alpha * n(j) ** (1 - alpha) + shrink) / users(j) ** beta

alpha = 1 reads as P(j | i); beta > 0 discounts targets everybody has (the popularity
baseline already covers those). Each row keeps its ``neighbours`` strongest entries.
A user's score for j is sum_i X[ui] * S[ij]: one sparse product, no training loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from gateway.recommendations.interactions import Interaction

__all__ = [
    "Interaction",
    "Matrix",
    "Model",
    "ModelParams",
    "build_matrix",
    "item_similarity",
    "popularity",
    "recent_popularity",
    "top_items",
    "user_scores",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Dense cells per block of the co-occurrence computation. Each block holds its sparse
# product, the dense float64 copy, a negated copy and argpartition's int64 indices,
# about 40 bytes a cell: 160 MB at 4 million (20 million peaked at 0.76 GB over
# 9,066 items), and a catalogue of up to 20,000 items still takes 200 rows at a time.
_BLOCK_CELLS = 4_000_000


@dataclass(frozen=True, slots=True)
class ModelParams:
    """The model's knobs; the defaults are the ones tuned on MovieLens 100k (seed 42)."""

    neighbours: int = 100
    shrink: float = 0.0
    alpha: float = 1.0
    beta: float = 0.5
    user_norm: float = 0.5
    # Gateway events: how much one interaction of each kind says about taste.
    type_weights: dict[str, float] = field(
        default_factory=lambda: {"view": 1.0, "cart": 2.0, "purchase": 4.0, "rating": 1.0}
    )
    # Interactions lose half their weight every this many days (None: no decay).
    half_life_days: float | None = None
    # Share of the final score given to the user's category affinity (0 without categories).
    category_weight: float = 0.3


@dataclass(frozen=True, slots=True)
class Matrix:
    """User-item weights (CSR, users x items) and the ids behind its rows and columns."""

    weights: sp.csr_matrix
    users: tuple[str, ...]
    items: tuple[str, ...]

    @property
    def user_index(self) -> dict[str, int]:
        return {u: k for k, u in enumerate(self.users)}

    @property
    def item_index(self) -> dict[str, int]:
        return {i: k for k, i in enumerate(self.items)}


def build_matrix(
    interactions: Sequence[Interaction],
    params: ModelParams,
    *,
    items: Sequence[str] = (),
    now: float | None = None,
) -> Matrix:
    """Sum each (user, item)'s weighted, decayed interactions into one cell.

    Recency is measured from ``now`` (default: the newest interaction), so a build
    over the same data gives the same model whenever it runs.
    """
    users = tuple(dict.fromkeys(x.user for x in interactions))
    item_ids = tuple(dict.fromkeys([*items, *(x.item for x in interactions)]))
    if not interactions:
        return Matrix(sp.csr_matrix((0, len(item_ids))), users, item_ids)
    user_at, item_at = {u: k for k, u in enumerate(users)}, {i: k for k, i in enumerate(item_ids)}
    rows = np.fromiter((user_at[x.user] for x in interactions), np.int64, len(interactions))
    cols = np.fromiter((item_at[x.item] for x in interactions), np.int64, len(interactions))
    kinds = np.fromiter(
        (params.type_weights.get(x.kind, 1.0) for x in interactions), np.float64, len(interactions)
    )
    if params.half_life_days:
        at = np.fromiter((x.at for x in interactions), np.float64, len(interactions))
        age_days = ((now if now is not None else at.max()) - at) / 86_400.0
        kinds = kinds * 0.5 ** (np.maximum(age_days, 0.0) / params.half_life_days)
    weights = sp.csr_matrix((kinds, (rows, cols)), shape=(len(users), len(item_ids)))
    weights.sum_duplicates()
    return Matrix(weights, users, item_ids)


def item_similarity(weights: sp.csr_matrix, params: ModelParams) -> sp.csr_matrix:
    """Items x items: each row's ``neighbours`` strongest targets (see the module doc)."""
    n_users, n_items = weights.shape
    if n_items == 0 or n_users == 0:
        return sp.csr_matrix((n_items, n_items))
    x = weights.astype(np.float64).tocsr()
    activity = np.asarray(x.sum(axis=1)).ravel()
    scaled = sp.diags(1.0 / np.maximum(activity, 1e-12) ** params.user_norm) @ x
    transposed = scaled.T.tocsr()
    # Squared norms: with alpha = 0.5 the normalisation is exactly the cosine.
    mass = np.asarray(scaled.multiply(scaled).sum(axis=0)).ravel()
    reach = np.asarray((x > 0).sum(axis=0)).ravel().astype(np.float64)
    target = mass ** (1.0 - params.alpha)
    discount = np.maximum(reach, 1.0) ** params.beta
    keep = min(params.neighbours, n_items - 1)
    block = max(1, _BLOCK_CELLS // n_items)
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    values: list[FloatArray] = []
    for start in range(0, n_items, block):
        stop = min(n_items, start + block)
        dense = (transposed[start:stop] @ scaled).toarray()
        dense[np.arange(stop - start), np.arange(start, stop)] = 0.0
        source = mass[start:stop, None] ** params.alpha
        dense /= source * target[None, :] + params.shrink + 1e-12
        dense /= discount[None, :]
        if keep <= 0:
            continue
        top = np.argpartition(-dense, keep - 1, axis=1)[:, :keep]
        picked = np.take_along_axis(dense, top, axis=1)
        mask = picked > 0
        rows.append((np.arange(start, stop)[:, None] + np.zeros_like(top))[mask])
        cols.append(top[mask])
        values.append(picked[mask])
    if not rows:
        return sp.csr_matrix((n_items, n_items))
    return sp.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_items, n_items),
    )


def popularity(weights: sp.csr_matrix) -> FloatArray:
    """How many users touched each item (the baseline, and the cold-start answer)."""
    counts: FloatArray = np.asarray((weights > 0).sum(axis=0), dtype=np.float64).ravel()
    return counts


def recent_popularity(
    matrix: Matrix, interactions: Sequence[Interaction], days: float
) -> FloatArray:
    """Users per item over the last ``days`` before the newest interaction ("trending")."""
    scores = np.zeros(len(matrix.items))
    if not interactions:
        return scores
    newest = max(x.at for x in interactions)
    index = matrix.item_index
    seen: set[tuple[str, str]] = set()
    for x in interactions:
        if newest - x.at <= days * 86_400.0 and (x.user, x.item) not in seen:
            seen.add((x.user, x.item))
            scores[index[x.item]] += 1.0
    return scores


def user_scores(weights: sp.csr_matrix, similarity: sp.csr_matrix) -> FloatArray:
    """Dense users x items scores for these users' rows (call it on a block of users)."""
    scores: FloatArray = np.asarray((weights @ similarity).toarray(), dtype=np.float64)
    return scores


def top_items(scores: FloatArray, exclude: sp.csr_matrix | None, k: int) -> IntArray:
    """Each row's ``k`` best columns, best first, never one ``exclude`` marks."""
    scores = scores.copy()
    if exclude is not None:
        rows, cols = exclude.nonzero()
        scores[rows, cols] = -np.inf
    k = min(k, scores.shape[1])
    if k == 0:
        return np.zeros((scores.shape[0], 0), dtype=np.int64)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    ranked: IntArray = np.take_along_axis(top, order, axis=1).astype(np.int64)
    return ranked


@dataclass(frozen=True, slots=True)
class Model:
    """A fitted model: similarity, popularity, and each item's category (for affinity)."""

    matrix: Matrix
    similarity: sp.csr_matrix
    popularity: FloatArray
    params: ModelParams
    # Category index per item (-1: none) and the one-hot items x categories matrix.
    category_of: IntArray
    categories: tuple[str, ...]
    _one_hot: sp.csr_matrix
    _popularity_in_category: FloatArray

    @classmethod
    def fit(
        cls, matrix: Matrix, params: ModelParams, categories: dict[str, str] | None = None
    ) -> Model:
        names = tuple(sorted(set((categories or {}).values())))
        at = {name: k for k, name in enumerate(names)}
        category_of = np.array(
            [at.get((categories or {}).get(item, ""), -1) for item in matrix.items], np.int64
        )
        known = np.flatnonzero(category_of >= 0)
        one_hot = sp.csr_matrix(
            (np.ones(len(known)), (known, category_of[known])),
            shape=(len(matrix.items), len(names)),
        )
        pop = popularity(matrix.weights)
        best = np.zeros(len(names))
        np.maximum.at(best, category_of[known], pop[known])
        in_category = np.zeros(len(matrix.items))
        in_category[known] = pop[known] / np.maximum(best[category_of[known]], 1e-12)
        return cls(
            matrix,
            item_similarity(matrix.weights, params),
            pop,
            params,
            category_of,
            names,
            one_hot,
            in_category,
        )

    def scores(self, rows: sp.csr_matrix) -> tuple[FloatArray, FloatArray]:
        """(similarity scores, final scores) for these user rows.

        The final score blends the similarity score, scaled to the user's best, with
        the user's category affinity times the item's popularity within its category:
        it ranks a shopper's favourite category's best sellers among their neighbours,
        and carries a user whose few items have no neighbours yet.
        """
        similar = user_scores(rows, self.similarity)
        weight = self.params.category_weight
        if not self.categories or weight <= 0:
            return similar, similar
        totals = np.asarray(rows.sum(axis=1)).ravel()
        affinity = np.asarray((rows @ self._one_hot).todense()) / np.maximum(totals, 1e-12)[:, None]
        padded = np.hstack([affinity, np.zeros((rows.shape[0], 1))])
        by_item = padded[:, self.category_of] * self._popularity_in_category[None, :]
        best = similar.max(axis=1, initial=0.0)
        scaled = similar / np.maximum(best, 1e-12)[:, None]
        final: FloatArray = (1.0 - weight) * scaled + weight * by_item
        return similar, final
