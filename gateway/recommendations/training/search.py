"""The search behind model selection: inner folds, each candidate fitted and scored on
them once, and the grids each family's settings are searched on (``selection`` decides
what serves from the trials this leaves).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from gateway.recommendations.interactions import Interaction
from gateway.recommendations.model import ModelParams, build_matrix
from gateway.recommendations.training.families import (
    Blend,
    Fitted,
    Params,
    TrainingData,
    fit,
    standardised,
)
from gateway.recommendations.training.metrics import Split, evaluate_fitted, held_matrix, split
from gateway.recommendations.training.trials import Setting, Trial

VALIDATION_USERS = 5_000
BLEND_WITHIN = 0.8  # a family joins blends when it validates within 20 % of the best
BLEND_MEMBERS = 3
# What blends mix: the families whose settings are searched on the inner split. The
# item-to-item model's fixed settings validated well in blends and lost on the test
# (MovieLens 100k: 0.416 against 0.424 for ALS alone).
_BLENDED = ("knn", "ease", "als")
_BLEND_SHARES = (0.2, 0.35, 0.5, 0.65, 0.8)  # the stronger member's share in a pair
EASE_COARSE = (3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
KNN_COARSE = (5.0, 20.0, 80.0, 320.0, 1280.0)
# Item-kNN keeps items x K similarities (12 bytes each, and implicit's own copy while
# it fits): K is capped so that this stays under 10 million cells, 1,100 neighbours
# at 9,066 items, where the grid's extension to 5,120 took the eval's peak to 2 GB
# (the model kNN lost to there was not kNN at all).
KNN_MAX_CELLS = 10_000_000
# ALS: what matters most is the regularisation against the confidence given to what
# was seen (alpha), so the two are searched together, as a ratio, before the factors.
_ALS_ALPHAS = (1.0, 3.0, 10.0, 30.0)
_ALS_RATIOS = (3.0, 10.0, 30.0)  # regularization / alpha
_ALS_FACTORS = (16, 32, 64, 128)
_ALS_START_FACTORS = 32  # the grid's cost grows with the square of the factors
_ALS_LOOK_ITERATIONS = 8
# Blend members' standardised scores are kept per fold while blends are tried (each
# member scored once, not once per blend) up to this many users x items cells.
_KEPT_SCORE_CELLS = 25_000_000


@dataclass(slots=True)
class Fold:
    """One inner split: the data fitted on, and whose held-out items are ranked."""

    data: TrainingData
    users: np.ndarray[Any, Any]
    seen: sp.csr_matrix
    held: sp.csr_matrix
    kept: dict[Setting, Fitted] = field(default_factory=dict)
    scored: dict[Setting, np.ndarray[Any, Any]] = field(default_factory=dict)

    def keep_scores(self, setting: Setting, fitted: Fitted) -> None:
        """Keep ``fitted``'s standardised scores of the validation users, if they fit."""
        if len(self.users) * self.data.n_items <= _KEPT_SCORE_CELLS:
            self.scored[setting] = standardised(fitted.scores(self.users))

    def mixed(self, setting: Setting) -> Fitted | None:
        """A blend of kept members' scores (None unless every member's are kept)."""
        if not setting.parts or any(p not in self.scored for p in setting.parts):
            return None
        weights = setting.options["weights"]
        total = sum(w * self.scored[p] for w, p in zip(weights, setting.parts, strict=True))
        return _Mixed(self.users, np.asarray(total), setting.options)

    def forget(self) -> None:
        self.kept.clear()
        self.scored.clear()
        self.data.forget_grams()


@dataclass(eq=False)
class _Mixed:
    """A blend's scores for one fold's validation users, from its members' kept scores
    (the same sums ``Blend`` makes): all validation asks of a candidate."""

    users: np.ndarray[Any, Any]
    total: np.ndarray[Any, Any]
    params: Params
    family: str = "blend"

    def scores(self, users: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        at = {int(u): n for n, u in enumerate(self.users.tolist())}
        found: np.ndarray[Any, Any] = self.total[[at[int(u)] for u in users]]
        return found

    def neighbours(self, k: int) -> sp.csr_matrix:
        raise NotImplementedError("validation only ranks; a served blend is a Blend")


@dataclass(slots=True)
class Validation:
    """Every trial so far, on the same folds: each setting is fitted and scored once."""

    folds: list[Fold]
    k: int
    trials: list[Trial] = field(default_factory=list)

    def run(self, setting: Setting, keep: bool = False) -> Trial:
        """Fit and score ``setting`` on every fold (once: a repeated setting is looked up)."""
        for done in self.trials:
            if done.setting == setting:
                return done
        started = time.perf_counter()
        precision = ndcg = 0.0
        per_user: list[np.ndarray[Any, Any]] = []
        for fold in self.folds:
            fitted = self.fit(fold, setting)
            found = evaluate_fitted(fitted, fold.users, fold.seen, fold.held, self.k, per_user)
            precision += found[0] / len(self.folds)
            ndcg += found[1] / len(self.folds)
            if keep:
                fold.kept[setting] = fitted
        users = np.concatenate(per_user) if per_user else np.zeros(0)
        trial = Trial(setting, precision, ndcg, time.perf_counter() - started, users)
        self.trials.append(trial)
        return trial

    def fit(self, fold: Fold, setting: Setting) -> Fitted:
        if setting in fold.kept:
            return fold.kept[setting]
        if (mixed := fold.mixed(setting)) is not None:
            return mixed
        if setting.parts:
            members = tuple(self.fit(fold, p) for p in setting.parts)
            return Blend(members, tuple(setting.options["weights"]))
        return fit(setting.family, setting.options, fold.data)

    def best_of(self, family: str) -> Trial | None:
        found = [t for t in self.trials if t.setting.family == family]
        return max(found, key=lambda t: t.key) if found else None


def make_fold(
    interactions: Sequence[Interaction],
    how: Split,
    seed: int,
    items: Sequence[str],
    categories: dict[str, str],
    params: ModelParams,
    threads: int,
) -> Fold:
    inner_train, inner_held = split(interactions, how, seed=seed)
    matrix = build_matrix(inner_train, params, items=items)
    data = TrainingData(matrix, categories, params, threads=threads, seed=seed)
    users = [u for u in matrix.users if u in inner_held]
    if len(users) > VALIDATION_USERS:
        users = sorted(random.Random(seed).sample(users, VALIDATION_USERS))
    index = matrix.user_index
    rows = np.array([index[u] for u in users], dtype=np.int64)
    held = held_matrix(inner_held, matrix.users, matrix.items)
    return Fold(data, rows, (matrix.weights > 0).tocsr(), held)


def search_log(v: Validation, make: Callable[[float], Setting], coarse: Sequence[float]) -> None:
    """A coarse log grid (extended past its ends while that improves), then the best
    point's neighbours at half the step."""
    grid = list(coarse)
    trials = [v.run(make(x)) for x in grid]
    best_x = grid[max(range(len(trials)), key=lambda n: trials[n].key)]
    ratio = grid[1] / grid[0]
    while best_x in (grid[0], grid[-1]):
        further = best_x / ratio if best_x == grid[0] else best_x * ratio
        if not 0.1 <= further <= 1e6 or v.run(make(further)).key <= v.run(make(best_x)).key:
            break
        grid = [further, *grid] if further < best_x else [*grid, further]
        best_x = further
    step = math.sqrt(ratio)
    for x in (best_x / step, best_x * step):
        v.run(make(x))


def search_ease(v: Validation, view: str) -> list[str]:
    """EASE's ridge on a log grid, refined around the best (``search_log``). Past
    ``ease_search_items`` items (``TrainingData``; 3,000) the grid is searched on that
    many of the most popular (each fit a thirtieth of the cost at 9,000 items), then
    the best ridge and its neighbours at a quarter of the step are fitted on every item
    EASE models (up to ``ease_max_items``, 15,000): the long tail is what the capped
    model cannot rank, and the ridge that suits the head is close to the one that
    suits all. Returns notes for the selection's record."""
    first = v.folds[0].data
    items, most = first.n_items, first.ease_max_items

    def make(x: float, limit: int | None) -> Setting:
        capped = {"items": limit} if limit is not None else {}
        return Setting.of("ease", l2=round(x, 4), input=view, **capped)

    limit = first.ease_search_items if items > first.ease_search_items else None
    search_log(v, lambda x: make(x, limit), EASE_COARSE)
    notes: list[str] = []
    if limit is not None:
        found = v.best_of("ease")
        assert found is not None
        best = float(found.setting.options["l2"])
        step = math.sqrt(math.sqrt(EASE_COARSE[1] / EASE_COARSE[0]))
        for x in (best, best / step, best * step):
            v.run(make(x, None))
        notes.append(
            f"EASE's ridge searched on the {limit:,} most popular of {items:,} items, then "
            f"refined on {min(items, most):,}"
        )
    if items > most:
        notes.append(
            f"EASE modelled the {most:,} most popular of {items:,} items "
            "(its items x items inverse grows with their square; the others rank last)"
        )
    for fold in v.folds:  # the Gram matrices are the largest thing a search keeps
        fold.data.forget_grams()
    return notes


def search_als(v: Validation, view: str, items: int) -> None:
    """A first look at half the iterations, enough to rank alpha and the regularization:
    alpha at the middle ratio, then the ratio at the best alpha (6 fits; the build's
    largest cost was a 12-point grid of both). Then the factors (at most half the items)
    at full length: at half of it, fewer factors looked better than they were (MovieLens
    100k: 32 chosen, 128 better). Then the regularization refined around the best."""

    def setting(factors: int, alpha: float, regularization: float, iterations: int = 15) -> Setting:
        return Setting.of(
            "als",
            factors=factors,
            alpha=alpha,
            regularization=round(regularization, 4),
            iterations=iterations,
            input=view,
        )

    start = min(_ALS_START_FACTORS, max(8, items // 2))

    def look(alpha: float, ratio: float) -> Trial:
        return v.run(setting(start, alpha, alpha * ratio, _ALS_LOOK_ITERATIONS))

    alpha = max(_ALS_ALPHAS, key=lambda a: look(a, _ALS_RATIOS[1]).key)
    ratio = max(_ALS_RATIOS, key=lambda r: look(alpha, r).key)
    regularization = alpha * ratio
    sizes = [f for f in _ALS_FACTORS if f <= max(_ALS_FACTORS[0], items // 2)]
    factors = max(sizes, key=lambda f: v.run(setting(f, alpha, regularization)).key)
    step = math.sqrt(_ALS_RATIOS[1] / _ALS_RATIOS[0])
    for r in (regularization / step, regularization * step):
        v.run(setting(factors, alpha, r))


def search_blend(v: Validation, candidates: list[Setting]) -> None:
    """Blends of the best personal families (at most ``BLEND_MEMBERS``, each validating
    within ``BLEND_WITHIN`` of the best): each pair mixed at shares on a grid, the best
    pair's share refined, then the third added to it at a small share. Near-equal families
    make different mistakes (a factorisation blurs what a neighbourhood sees sharply),
    so their blend is usually better than either on new data as well."""
    ranked = sorted(
        (v.run(c) for c in candidates if c.family in _BLENDED),
        key=lambda t: t.key,
        reverse=True,
    )
    if not ranked:
        return
    floor = ranked[0].precision * BLEND_WITHIN
    top = [t.setting for t in ranked if t.precision >= floor][:BLEND_MEMBERS]
    if len(top) < 2:
        return
    for fold in v.folds:  # each member fitted once per fold, not once per blend tried
        for candidate in top:
            fitted = v.fit(fold, candidate)
            fold.keep_scores(candidate, fitted)
            if candidate not in fold.scored:  # kept scores are all a blend needs
                fold.kept[candidate] = fitted
            del fitted
    best_pair: tuple[float, tuple[Setting, Setting], Trial] | None = None
    for n, first in enumerate(top):
        for second in top[n + 1 :]:
            for share in _BLEND_SHARES:
                trial = v.run(Setting.weighted((first, second), (share, 1 - share)))
                if best_pair is None or trial.key > best_pair[2].key:
                    best_pair = (share, (first, second), trial)
    assert best_pair is not None
    share, pair, _ = best_pair
    step = (_BLEND_SHARES[1] - _BLEND_SHARES[0]) / 2
    for refined in (share - step, share + step):
        if 0 < refined < 1:
            v.run(Setting.weighted(pair, (refined, 1 - refined)))
    base = v.best_of("blend")
    third = [s for s in top if s not in pair]
    if base is not None and third:
        mix = dict(zip(base.setting.parts, base.setting.options["weights"], strict=True))
        for extra in (0.15, 0.3):
            members = (*mix, third[0])
            weights = (*((1 - extra) * w for w in mix.values()), extra)
            v.run(Setting.weighted(members, weights))
    for fold in v.folds:
        fold.forget()
