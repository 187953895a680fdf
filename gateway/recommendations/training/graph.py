"""RP3beta (Paudel et al. 2017; Dacrema et al. 2019's strong simple baseline): item
similarity as a three-step random walk item -> user -> item on the interaction graph,
with popular destinations damped.

``W[i, j] = (sum_u P(u | i)^alpha P(j | u)^alpha) / popularity(j)^beta``, each row kept
to its ``neighbours`` strongest entries; a user's score for ``j`` is their row of the
interaction matrix times ``W``. ``beta`` is what a neighbourhood lacks: it trades
popular items for ones that walk back to this user unusually often, and validation
chooses how much (0 is a plain random walk).

Memory and time: ``W`` is computed a block of items at a time (dense block x items)
and kept sparse (items x ``neighbours``), so memory grows with items x neighbours, not
items^2; each block costs the sparse product of its items' users with their items.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from gateway.recommendations.training.families import (
    Fitted,
    ItemWeights,
    Params,
    TrainingData,
    top_k_rows,
)

_BLOCK_CELLS = 10_000_000  # dense cells of one block of W: 80 MB


def fit_rp3beta(params: Params, data: TrainingData) -> Fitted:
    """RP3beta with ``alpha``, ``beta`` and ``neighbours`` from ``params``."""
    view = str(params.get("input", "binary"))
    alpha = float(params.get("alpha", 1.0))
    beta = float(params["beta"])
    k = int(params["neighbours"])
    x = data.binary
    user_degree = np.asarray(x.sum(axis=1)).ravel()
    item_degree = np.asarray(x.sum(axis=0)).ravel()
    # Transition probabilities user -> item and item -> user, each raised to alpha.
    to_item = sp.csr_matrix(sp.diags(1.0 / np.maximum(user_degree, 1.0)) @ x, dtype=np.float64)
    to_user = sp.csr_matrix(sp.diags(1.0 / np.maximum(item_degree, 1.0)) @ x.T, dtype=np.float64)
    if alpha != 1.0:
        to_item.data **= alpha
        to_user.data **= alpha
    damping = np.zeros(len(item_degree))
    seen = item_degree > 0
    damping[seen] = item_degree[seen] ** -beta
    n = data.n_items
    block = max(1, _BLOCK_CELLS // max(n, 1))
    parts: list[tuple[Any, Any, Any]] = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        dense = (to_user[start:stop] @ to_item).toarray() * damping[None, :]
        dense[np.arange(stop - start), np.arange(start, stop)] = 0.0
        parts.append(top_k_rows(dense, k, start))
    rows, cols, values = (np.concatenate([p[i] for p in parts]) for i in range(3))
    weights = sp.csr_matrix((values, (rows, cols)), shape=(n, n))
    return ItemWeights(data, weights, view, "rp3beta", dict(params))
