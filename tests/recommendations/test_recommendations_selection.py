"""Model selection on synthetic data where the answer is known: the served model follows
what the history says, is never a personal model that popularity would beat, and stays
within its memory bounds."""

from __future__ import annotations

import random
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_info

from gateway.recommendations.interactions import Interaction
from gateway.recommendations.model import ModelParams, build_matrix
from gateway.recommendations.training.builder import compute
from gateway.recommendations.training.ease import ease_weights
from gateway.recommendations.training.evaluation import evaluate
from gateway.recommendations.training.families import TrainingData, fit, thread_limits
from gateway.recommendations.training.history import History
from gateway.recommendations.training.metrics import Split
from gateway.recommendations.training.search import Validation, make_fold, search_ease
from gateway.recommendations.training.selection import fit_setting, select
from gateway.recommendations.training.trials import Setting

NEIGHBOURHOOD = {"knn", "ease", "item_to_item"}


def _independent(seed: int, users: int = 300, items: int = 80, each: int = 12) -> list[Interaction]:
    """Everyone draws from the same skewed popularity: behaviour says nothing personal."""
    rng = random.Random(seed)
    weights = [1.0 / (k + 1) ** 1.1 for k in range(items)]
    found = []
    for user in range(users):
        chosen: set[int] = set()
        while len(chosen) < each:
            chosen.add(rng.choices(range(items), weights=weights)[0])
        order = sorted(chosen, key=lambda _: rng.random())
        found += [Interaction(f"u{user}", f"i{i}", "rating", float(t)) for t, i in enumerate(order)]
    return found


def _pairs(seed: int, users: int = 300, pairs: int = 60, each: int = 6) -> list[Interaction]:
    """Products come in pairs always taken together (a book and its sequel): whoever has
    one has the other. Item neighbourhoods see it at once; popularity cannot, and a
    low-rank factorisation blurs 60 independent pairs."""
    rng = random.Random(seed)
    found = []
    for user in range(users):
        chosen = rng.sample(range(pairs), each)
        items = [f"p{c}a" for c in chosen] + [f"p{c}b" for c in chosen]
        rng.shuffle(items)
        found += [Interaction(f"u{user}", i, "rating", float(t)) for t, i in enumerate(items)]
    return found


def _groups_and_pairs(seed: int, users: int = 240) -> list[Interaction]:
    """Two patterns at once: half of what each user takes comes from their taste group
    (30 products of 120), half in pairs across the catalogue (a book and its sequel).
    No one family is best at both, so families validate close to each other."""
    rng = random.Random(seed)
    found = []
    for user in range(users):
        group = user % 4
        items = [f"g{group}_{i}" for i in rng.sample(range(30), 6)]
        for pair in rng.sample(range(40), 3):
            items += [f"p{pair}a", f"p{pair}b"]
        rng.shuffle(items)
        found += [Interaction(f"u{user}", i, "rating", float(t)) for t, i in enumerate(items)]
    return found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_popularity_is_served_when_behaviour_says_nothing(seed: int) -> None:
    with thread_limits(1):
        selection = select(_independent(seed), ModelParams(), how="random", seed=seed)
    assert selection.chosen.family == "popularity"
    best = max(selection.trials, key=lambda t: t.key)
    if best.setting.family != "popularity":
        # A personal model validated a hair above it, by chance: refused, and said so.
        assert "within the noise" in selection.reason()
        assert best.setting.label() in selection.reason()


def test_the_family_that_fits_the_data_is_chosen_and_beats_the_others() -> None:
    with thread_limits(1):
        report = evaluate(_pairs(0), ModelParams(), how="random", seed=0)
    chosen = report.selection.chosen
    families = {chosen.family, *(p.family for p in chosen.parts)}
    assert families <= NEIGHBOURHOOD | {"blend"}
    assert chosen.family != "popularity"
    figures = {row.name: row.metrics.precision for row in report.rows}
    assert figures["selected"] > figures["ALS"]
    assert figures["selected"] >= 5 * figures["popularity"]
    assert report.model.coverage > report.popularity.coverage


@pytest.mark.parametrize("how", ["random", "recent"])
def test_served_model_never_validates_below_popularity(how: Split) -> None:
    data = _independent(7) + _pairs(7, users=100)
    with thread_limits(1):
        selection = select(data, ModelParams(), how=how, seed=7)
    served = next(t for t in selection.trials if t.setting == selection.chosen)
    assert served.precision >= selection.best["popularity"].precision
    assert selection.fitted is not None
    assert selection.fitted.scores(np.array([0, 1])).shape == (2, len({x.item for x in data}))


def test_selection_is_recorded_with_every_trial_and_a_reason() -> None:
    with thread_limits(1):
        selection = select(_pairs(3), ModelParams(), how="recent", seed=3, refit=False)
    record = selection.record()
    assert record["label"] == selection.chosen.label()
    assert record["reason"].startswith(selection.chosen.label())
    assert "precision@10" in record["reason"]
    settings = {t["setting"] for t in record["trials"]}
    assert {"popularity", "item_to_item"} <= settings
    assert any(s.startswith(f"{family}(") for s in settings for family in ("ease", "als", "knn"))
    assert record["trials"][0]["precision"] >= record["trials"][-1]["precision"]


def test_too_little_history_is_said_not_guessed() -> None:
    one_user = [Interaction("u", f"i{k}", "view", float(k)) for k in range(3)]
    selection = select(one_user, ModelParams(), how="recent", seed=1)
    assert selection.chosen.family == "popularity"
    assert "too little history" in selection.reason()
    singles = [Interaction(f"u{k}", f"i{k % 5}", "view", 0.0) for k in range(40)]
    with thread_limits(1):
        selection = select(singles, ModelParams(), how="recent", seed=1)
    assert selection.chosen.family == "item_to_item"
    assert "too little history" in selection.reason()


def test_ease_models_only_the_most_popular_items_beyond_its_cap() -> None:
    data = _pairs(5, users=200, pairs=40)
    matrix = build_matrix(data, ModelParams())
    capped = TrainingData(matrix, ease_max_items=30)
    popular = set(np.argsort(-capped.popularity, kind="stable")[:30].tolist())
    assert set(capped.ease_items().tolist()) == popular
    model = fit("ease", {"l2": 10.0}, capped)
    scores = model.scores(np.arange(20))
    others = np.array(sorted(set(range(len(matrix.items))) - popular))
    modelled = np.array(sorted(popular))
    # Every item EASE does not model ranks after every one it does, for every user.
    assert (scores[:, others].max(axis=1) < scores[:, modelled].min(axis=1)).all()
    neighbours = model.neighbours(5).tocoo()
    assert set(neighbours.row.tolist()) | set(neighbours.col.tolist()) <= popular
    with thread_limits(1):
        selection = select(data, ModelParams(), how="recent", seed=5, refit=False)
    assert not selection.notes  # 80 items: under the cap, nothing to say


def test_ease_ridge_is_searched_on_the_popular_items_then_refitted_on_all() -> None:
    # A long catalogue: the grid runs on the most popular items (cheap), then the best
    # ridge and its neighbours on every item, and the one that serves ranks the tail too.
    data = _pairs(7, users=200, pairs=40)
    items = sorted({x.item for x in data})
    with thread_limits(1):
        fold = make_fold(data, "recent", 7, items, {}, ModelParams(), 1)
        fold.data.ease_search_items = 30
        v = Validation([fold], 10)
        notes = search_ease(v, "binary")
    ease = [t.setting.options for t in v.trials]
    assert sum(1 for o in ease if "items" not in o) == 3
    assert all(o.get("items", 30) == 30 for o in ease)
    refitted = {o["l2"] for o in ease if "items" not in o}
    best_capped = max((t for t in v.trials if "items" in t.setting.options), key=lambda t: t.key)
    assert best_capped.setting.options["l2"] in refitted
    assert notes
    assert "30 most popular of 80" in notes[0]
    assert not fold.data._grams  # the Gram matrices are freed once the search is done
    best = max(v.trials, key=lambda t: t.key)
    assert "items" not in best.setting.options  # every pair is linked, not only the head's


def test_ease_weights_are_the_closed_form() -> None:
    rng = np.random.default_rng(3)
    for size, dtype in ((40, np.float64), (1200, np.float32)):
        x = (rng.random((300, size)) < 0.05).astype(dtype)
        gram = np.asarray(x.T.dot(x))
        found = ease_weights(gram, 20.0)
        inverse = np.linalg.inv(gram.astype(np.float64) + 20.0 * np.eye(size))
        expected = inverse / -np.diag(inverse)[None, :]
        np.fill_diagonal(expected, 0.0)
        assert found.dtype == dtype
        assert np.allclose(found, expected, atol=1e-5)
        # A single fit may give up its Gram matrix: the same weights, in its memory.
        spent = gram.copy()
        in_place = ease_weights(spent, 20.0, overwrite=True)
        assert np.shares_memory(in_place, spent)
        assert np.allclose(in_place, expected, atol=1e-5)


def test_thread_limits_cap_blas_for_the_fit() -> None:
    with thread_limits(1):
        inside = [api["num_threads"] for api in threadpool_info() if api["user_api"] == "blas"]
    assert inside
    assert set(inside) == {1}


def test_near_equal_families_are_blended_at_shares_chosen_on_validation() -> None:
    with thread_limits(1):
        selection = select(_groups_and_pairs(0), ModelParams(), how="random", seed=0, refit=False)
    blends = [t for t in selection.trials if t.setting.family == "blend"]
    # The best two searched families mixed at several shares, the third added to the best mix.
    pairs: dict[frozenset[str], set[tuple[float, ...]]] = {}
    for trial in blends:
        members = frozenset(p.label() for p in trial.setting.parts)
        pairs.setdefault(members, set()).add(trial.setting.options["weights"])
        # Only families whose settings were searched on the inner split are mixed.
        assert {p.family for p in trial.setting.parts} <= {"ease", "als", "knn"}
    assert max(len(shares) for shares in pairs.values()) >= 5
    assert any(len(members) == 3 for members in pairs)
    # What validates best serves (popularity is far below): no simpler near-equal instead.
    best = max(selection.trials, key=lambda t: t.key)
    assert selection.chosen == best.setting
    assert selection.chosen.family == "blend"
    assert not selection.note


def test_a_served_blend_is_precomputed_into_each_customers_list() -> None:
    names = {f"u{n}": str(uuid.UUID(int=n + 1)) for n in range(240)}
    history = History(
        [Interaction(names[x.user], x.item, "purchase", x.at) for x in _groups_and_pairs(1)]
    )
    params = ModelParams()
    rows = compute(history, params, {}, set(names.values()), families=("blend",))
    assert rows.label.startswith("blend(")
    chosen = rows.selection["chosen"]
    assert chosen["family"] == "blend"
    assert len(chosen["parts"]) >= 2
    # Serving reads these lists: their order is the blend's, computed at build time.
    with thread_limits(1):
        selection = select(
            history.interactions, params, how="recent", seed=42, families=("blend",), refit=False
        )
        data = TrainingData(build_matrix(history.interactions, params), seed=42)
        model = fit_setting(selection.chosen, data)
    assert selection.chosen.label() == rows.label
    for user in ("u0", "u7"):
        listed = rows.lists[uuid.UUID(names[user])].candidates
        assert len(listed) >= 10
        scores = model.scores(np.array([data.matrix.user_index[names[user]]]))[0]
        at = {item: j for j, item in enumerate(data.matrix.items)}
        ranked = np.array([scores[at[c.product_id]] for c in listed])
        assert ranked[0] == pytest.approx(scores.max())
        assert (np.diff(ranked) <= 1e-5).all()  # best first, by the blend's scores (float32 parts)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1_000), share=st.floats(0.05, 0.95))
def test_a_blend_validates_the_same_from_kept_scores_as_fitted_whole(
    seed: int, share: float
) -> None:
    # Validation mixes blend members' scores kept once per fold; what a served Blend
    # computes from its members must rank (and so score) the same.
    data = _groups_and_pairs(seed, users=80)
    members = (
        Setting.of("knn", neighbours=20, weighting="cosine", input="binary"),
        Setting.of("ease", l2=30.0, input="binary"),
    )
    blend = Setting.weighted(members, (share, 1 - share))
    with thread_limits(1):
        fold = make_fold(data, "random", seed, sorted({x.item for x in data}), {}, ModelParams(), 1)
        whole = Validation([fold], 10).run(blend)
        kept = Validation([fold], 10)
        for member in members:
            fold.keep_scores(member, kept.fit(fold, member))
        mixed = kept.run(blend)
    assert mixed.precision == pytest.approx(whole.precision)
    assert mixed.ndcg == pytest.approx(whole.ndcg)
    assert np.allclose(mixed.per_user, whole.per_user)


def test_als_is_searched_in_a_bounded_number_of_fits() -> None:
    with thread_limits(1):
        selection = select(
            _groups_and_pairs(2), ModelParams(), how="recent", seed=2, families=("als",)
        )
    als = [t.setting for t in selection.trials if t.setting.family == "als"]
    # A first look at alpha and the regularization (6 fits at half the iterations),
    # then the factors and the regularization around the best at full length.
    assert len(als) <= 12
    assert sum(1 for s in als if s.options["iterations"] < 15) == 6
    assert selection.chosen.family == "als"
