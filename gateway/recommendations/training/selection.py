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
   around the best; ALS's confidence, then regularisation (a first look at half the
   iterations), then factors and the regularisation refined at full length;
   then the best searched families (EASE, ALS, kNN; within 20 % of the best) are
   blended: scores standardised per user, each pair of them at five shares, the best
   pair's share refined, then the third added to it at a small share;
4. the candidate that validates best serves, refitted on the whole history with the
   settings validated; popularity instead when that one is not better than
   popularity by more than the noise (one standard error of the per-user difference).

The ``Selection`` keeps every trial, so the build stores which model serves and why.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.recommendations.interactions import Interaction
from gateway.recommendations.model import ModelParams, build_matrix
from gateway.recommendations.training.families import Blend, Fitted, TrainingData, fit
from gateway.recommendations.training.metrics import Split, describe_split
from gateway.recommendations.training.search import (
    KNN_COARSE,
    KNN_MAX_CELLS,
    VALIDATION_USERS,
    Validation,
    make_fold,
    search_als,
    search_blend,
    search_ease,
    search_log,
)
from gateway.recommendations.training.trials import Setting, Trial, paired_gain

__all__ = ["ALL_FAMILIES", "VALIDATION_USERS", "Selection", "fit_setting", "select"]

# A model is served instead of a simpler one (popularity first) only when it validates
# better by more than this many standard errors of the per-user difference.
NOISE_MULTIPLE = 1.0
RANDOM_FOLDS = 2  # a random inner split is noisy: average two (a recent one is fixed)
SINGLE_FAMILIES = ("popularity", "item_to_item", "knn", "ease", "als")
ALL_FAMILIES = (*SINGLE_FAMILIES, "blend")


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
            whole = TrainingData(
                build_matrix(interactions, params, items=items), seed=seed, keep_grams=False
            )
            selection.fitted = fit_setting(nothing, whole)
        return selection
    allowed = set(families)  # what may be served
    # A blend needs members: asked for alone, it is made of every family.
    wanted = allowed if allowed - {"blend"} else set(ALL_FAMILIES)
    all_items = tuple(dict.fromkeys([*items, *(x.item for x in interactions)]))
    count = folds if folds is not None else (RANDOM_FOLDS if how == "random" else 1)
    known = dict(categories or {})
    found = [
        make_fold(interactions, how, seed + 1 + n, all_items, known, params, threads)
        for n in range(count)
    ]
    v = Validation(found, k)
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
        notes += search_ease(v, view)
    if "knn" in wanted:
        for weighting in ("cosine", "bm25"):

            def knn(x: float, weighting: str = weighting) -> Setting:
                most = max(1, min(first.n_items, KNN_MAX_CELLS // max(first.n_items, 1)))
                neighbours = min(round(x), most)
                return Setting.of("knn", neighbours=neighbours, weighting=weighting, input=view)

            search_log(v, knn, KNN_COARSE)
    if "als" in wanted:
        search_als(v, view, first.n_items)
    best = {f: t for f in SINGLE_FAMILIES if (t := v.best_of(f)) is not None}
    if "blend" in wanted and len(best) >= 2:
        search_blend(v, [t.setting for t in best.values()])
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
            keep_grams=False,
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
