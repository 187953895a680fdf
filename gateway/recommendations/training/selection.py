"""Model selection: which family, with which settings, for this shop's (or data set's) history.

No one model wins everywhere: the defaults tuned on one split of one data set reached
0.57-0.72 of the best public baselines on others. So every build and every evaluation
chooses, on the history it was given and nothing else:

1. the training history is split again, the same way the model will be judged (a
   random quarter of each user's items, twice with different seeds, or each user's
   latest quarter of interactions);
2. each candidate is fitted on the inner part and ranks the held-out items of (at
   most ``VALIDATION_USERS``) users: precision@k decides, NDCG@k breaks ties;
3. EASE's ridge and the kNN neighbourhood are searched on a log grid and refined
   around the best; ALS's confidence and regularisation together, then its factors;
   then the best searched families (EASE, ALS, kNN; within 20 % of the best) are
   blended: scores standardised per user, each pair of them at five shares, the best
   pair's share refined, then the third added to it at a small share;
4. the candidate that validates best serves, refitted on the whole history with the
   settings validated; popularity instead when that one is not better than
   popularity by more than the noise (one standard error of the per-user difference).

The ``Selection`` keeps every trial, so the build stores which model serves and why.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from gateway.recommendations.interactions import Interaction
from gateway.recommendations.model import ModelParams, build_matrix
from gateway.recommendations.training.families import Blend, Fitted, TrainingData, fit
from gateway.recommendations.training.metrics import (
    Split,
    describe_split,
    evaluate_fitted,
    held_matrix,
    split,
)
from gateway.recommendations.training.trials import Setting, Trial, paired_gain

VALIDATION_USERS = 5_000
# A model is served instead of a simpler one (popularity first) only when it validates
# better by more than this many standard errors of the per-user difference.
NOISE_MULTIPLE = 1.0
BLEND_WITHIN = 0.8  # a family joins blends when it validates within 20 % of the best
BLEND_MEMBERS = 3
# What blends mix: the families whose settings are searched on the inner split. The
# item-to-item model's fixed settings validated well in blends and lost on the test
# (MovieLens 100k: 0.416 against 0.424 for ALS alone).
_BLENDED = ("knn", "ease", "als")
_BLEND_SHARES = (0.2, 0.35, 0.5, 0.65, 0.8)  # the stronger member's share in a pair
RANDOM_FOLDS = 2  # a random inner split is noisy: average two (a recent one is fixed)
SINGLE_FAMILIES = ("popularity", "item_to_item", "knn", "ease", "als")
ALL_FAMILIES = (*SINGLE_FAMILIES, "blend")
_EASE_COARSE = (3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
_KNN_COARSE = (5.0, 20.0, 80.0, 320.0, 1280.0)
# ALS: what matters most is the regularisation against the confidence given to what
# was seen (alpha), so the two are searched together, as a ratio, before the factors.
_ALS_ALPHAS = (1.0, 3.0, 10.0, 30.0)
_ALS_RATIOS = (3.0, 10.0, 30.0)  # regularization / alpha
_ALS_FACTORS = (16, 32, 64, 128)
_ALS_START_FACTORS = 32  # the grid's cost grows with the square of the factors


@dataclass(slots=True)
class Selection:
    """What validation chose, every trial, and the chosen model refitted on everything."""

    chosen: Setting
    trials: list[Trial]
    best: dict[str, Trial]  # the best trial of each family
    notes: list[str]
    protocol: str
    users: int
    k: int
    fitted: Fitted | None = None
    fit_seconds: float = 0.0
    note: str = ""  # why the choice is not the validation's, when it is not

    @property
    def winner(self) -> Trial:
        return self.best[self.chosen.family]

    def served_trial(self) -> Trial | None:
        return next((t for t in self.trials if t.setting == self.chosen), None)

    def reason(self) -> str:
        """One sentence a person can check against the trials."""
        if self.note:
            return f"{self.chosen.label()}: {self.note}"
        others = sorted(
            (t for f, t in self.best.items() if f != self.chosen.family),
            key=lambda t: t.key,
            reverse=True,
        )
        runner = (
            f"; next best {others[0].setting.label()} {others[0].precision:.4f}" if others else ""
        )
        popular = self.best.get("popularity")
        baseline = f"; popularity {popular.precision:.4f}" if popular else ""
        return (
            f"{self.chosen.label()} had the best precision@{self.k} on held-out training "
            f"data ({self.protocol}; {self.users:,} users): {self.winner.precision:.4f}"
            f"{runner}{baseline}"
        )

    def record(self) -> dict[str, Any]:
        """What the build stores with the model (JSON)."""
        return {
            "chosen": self.chosen.record(),
            "label": self.chosen.label(),
            "reason": self.reason(),
            "protocol": self.protocol,
            "validation_users": self.users,
            "k": self.k,
            "notes": list(self.notes),
            "fit_seconds": round(self.fit_seconds, 3),
            "trials": [
                {
                    "setting": t.setting.label(),
                    "precision": round(t.precision, 6),
                    "ndcg": round(t.ndcg, 6),
                    "seconds": round(t.seconds, 3),
                }
                for t in sorted(self.trials, key=lambda t: t.key, reverse=True)
            ],
        }


@dataclass(slots=True)
class _Fold:
    """One inner split: the data fitted on, and whose held-out items are ranked."""

    data: TrainingData
    users: np.ndarray[Any, Any]
    seen: sp.csr_matrix
    held: sp.csr_matrix
    kept: dict[Setting, Fitted] = field(default_factory=dict)


@dataclass(slots=True)
class _Validation:
    folds: list[_Fold]
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

    def fit(self, fold: _Fold, setting: Setting) -> Fitted:
        if setting in fold.kept:
            return fold.kept[setting]
        if setting.parts:
            members = tuple(self.fit(fold, p) for p in setting.parts)
            return Blend(members, tuple(setting.options["weights"]))
        return fit(setting.family, setting.options, fold.data)

    def best_of(self, family: str) -> Trial | None:
        found = [t for t in self.trials if t.setting.family == family]
        return max(found, key=lambda t: t.key) if found else None


def _fold(
    interactions: Sequence[Interaction],
    how: Split,
    seed: int,
    items: Sequence[str],
    categories: dict[str, str],
    params: ModelParams,
    threads: int,
) -> _Fold:
    inner_train, inner_held = split(interactions, how, seed=seed)
    matrix = build_matrix(inner_train, params, items=items)
    data = TrainingData(matrix, categories, params, threads=threads, seed=seed)
    users = [u for u in matrix.users if u in inner_held]
    if len(users) > VALIDATION_USERS:
        users = sorted(random.Random(seed).sample(users, VALIDATION_USERS))
    index = matrix.user_index
    rows = np.array([index[u] for u in users], dtype=np.int64)
    held = held_matrix(inner_held, matrix.users, matrix.items)
    return _Fold(data, rows, (matrix.weights > 0).tocsr(), held)


def select(
    interactions: Sequence[Interaction],
    params: ModelParams,
    *,
    how: Split,
    seed: int,
    items: Sequence[str] = (),
    categories: dict[str, str] | None = None,
    k: int = 10,
    threads: int = 1,
    families: Iterable[str] = ALL_FAMILIES,
    folds: int | None = None,
    refit: bool = True,
) -> Selection:
    """Choose a model on inner splits of ``interactions`` and (``refit``) fit it on all;
    ``families`` narrows what may be chosen.

    Call it under ``families.thread_limits``: BLAS threads are not limited here.
    """
    if len({x.user for x in interactions}) < 2:
        nothing = Setting.of("popularity")
        selection = Selection(nothing, [], {}, [], describe_split(how, 0), 0, k)
        selection.note = "too little history to validate anything (fewer than 2 users)"
        if refit:
            whole = TrainingData(build_matrix(interactions, params, items=items), seed=seed)
            selection.fitted = fit_setting(nothing, whole)
        return selection
    allowed = set(families)  # what may be served
    # A blend needs members: asked for alone, it is made of every family.
    wanted = allowed if allowed - {"blend"} else set(ALL_FAMILIES)
    all_items = tuple(dict.fromkeys([*items, *(x.item for x in interactions)]))
    count = folds if folds is not None else (RANDOM_FOLDS if how == "random" else 1)
    found = [
        _fold(interactions, how, seed + 1 + n, all_items, dict(categories or {}), params, threads)
        for n in range(count)
    ]
    v = _Validation(found, k)
    notes: list[str] = []
    first = found[0].data
    view = "binary"
    if "popularity" in wanted:
        v.run(Setting.of("popularity"))
    if "item_to_item" in wanted:
        v.run(Setting.of("item_to_item"))
    if not first.is_binary:
        # Event weights (a purchase over a view, recency) or plain presence: decided once,
        # on the cheapest neighbourhood, for every family after it.
        view = max(
            ("binary", "graded"),
            key=lambda x: v.run(Setting.of("knn", neighbours=50, weighting="cosine", input=x)).key,
        )
    if "ease" in wanted:
        if first.n_items > first.ease_max_items:
            notes.append(
                f"EASE modelled the {first.ease_max_items:,} most popular of "
                f"{first.n_items:,} items (its items x items inverse grows with their square)"
            )
        _search_log(v, lambda x: Setting.of("ease", l2=x, input=view), _EASE_COARSE)
    if "knn" in wanted:
        for weighting in ("cosine", "bm25"):

            def knn(x: float, weighting: str = weighting) -> Setting:
                neighbours = min(round(x), first.n_items)
                return Setting.of("knn", neighbours=neighbours, weighting=weighting, input=view)

            _search_log(v, knn, _KNN_COARSE)
    if "als" in wanted:
        _search_als(v, view, first.n_items)
    best = {f: t for f in SINGLE_FAMILIES if (t := v.best_of(f)) is not None}
    if "blend" in wanted and len(best) >= 2:
        _search_blend(v, [t.setting for t in best.values()])
        if (blended := v.best_of("blend")) is not None:
            best["blend"] = blended
    # Ties go to the simpler family (the order of ALL_FAMILIES).
    order = {f: n for n, f in enumerate(ALL_FAMILIES)}
    eligible = [t for f, t in best.items() if f in allowed] or list(best.values())
    winner = max(eligible, key=lambda t: (t.key, -order[t.setting.family]))
    selection = Selection(
        winner.setting, v.trials, best, notes, describe_split(how, count), len(found[0].users), k
    )
    # Behaviour must earn its place over popularity: among many candidates the one that
    # validates best is partly the luckiest, so a personal model serves only when it is
    # better than popularity by more than the noise. Between personal models the best
    # one serves: a blend of near-equals is what holds up on new data, and preferring a
    # simpler near-equal served the one that lost on the test more often than not.
    popular = best.get("popularity")
    if popular is not None and "popularity" in allowed and winner is not popular:
        gain, noise = paired_gain(winner, popular)
        if gain <= NOISE_MULTIPLE * noise:
            selection.chosen = popular.setting
            selection.note = (
                f"{winner.setting.label()} had the best precision@{k} on held-out training "
                f"data ({winner.precision:.4f}), but only {gain:+.4f} above popularity "
                f"({popular.precision:.4f}), within the noise (standard error "
                f"{noise:.4f}; {selection.users:,} users): popularity serves"
            )
    if not len(found[0].users) and "item_to_item" in best:
        # Nothing to validate on (every customer has one product): no evidence against
        # the gateway's own model, which at least follows co-occurrence and categories.
        selection.chosen = best["item_to_item"].setting
        selection.note = "too little history to validate (no customer has 2 products)"
    if refit:
        whole = TrainingData(
            build_matrix(interactions, params, items=all_items),
            dict(categories or {}),
            params,
            threads=threads,
            seed=seed,
        )
        started = time.perf_counter()
        selection.fitted = fit_setting(selection.chosen, whole)
        selection.fit_seconds = time.perf_counter() - started
    return selection


def fit_setting(setting: Setting, data: TrainingData) -> Fitted:
    """Fit a chosen setting (a blend: each member) on one training matrix."""
    if setting.parts:
        members = tuple(fit_setting(p, data) for p in setting.parts)
        return Blend(members, tuple(setting.options["weights"]), params=setting.options)
    return fit(setting.family, setting.options, data)


def _search_log(v: _Validation, make: Callable[[float], Setting], coarse: Sequence[float]) -> None:
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


def _search_als(v: _Validation, view: str, items: int) -> None:
    """Alpha and regularization on a grid at 32 factors and half the iterations, then
    the factors (at most half the items), then the regularization refined: about 18
    fits, most of them cheap."""

    def setting(factors: int, alpha: float, regularization: float, iterations: int = 15) -> Setting:
        return Setting.of(
            "als",
            factors=factors,
            alpha=alpha,
            regularization=round(regularization, 4),
            iterations=iterations,
            input=view,
        )

    trials = [  # a first look: half the iterations, enough to rank the settings
        v.run(setting(min(_ALS_START_FACTORS, max(8, items // 2)), alpha, alpha * ratio, 8))
        for alpha in _ALS_ALPHAS
        for ratio in _ALS_RATIOS
    ]
    options = max(trials, key=lambda t: t.key).setting.options
    alpha, regularization = float(options["alpha"]), float(options["regularization"])
    sizes = [f for f in _ALS_FACTORS if f <= max(_ALS_FACTORS[0], items // 2)]
    factors = max(sizes, key=lambda f: v.run(setting(f, alpha, regularization)).key)
    step = math.sqrt(_ALS_RATIOS[1] / _ALS_RATIOS[0])
    for r in (regularization / step, regularization * step):
        v.run(setting(factors, alpha, r))


def _search_blend(v: _Validation, candidates: list[Setting]) -> None:
    """Blends of the best personal families (at most ``BLEND_MEMBERS``, each validating
    within ``BLEND_WITHIN`` of the best): the best two mixed at shares on a grid, refined
    around the best share, then the third added at a small share. Near-equal families
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
            fold.kept[candidate] = v.fit(fold, candidate)
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
        fold.kept.clear()
