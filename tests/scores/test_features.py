"""Features as of a cut-off: nothing after it is read, and a feature that reads later
data stops the evaluation and the build."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.scores import bgnbd
from gateway.scores.evaluation import evaluate
from gateway.scores.features import Features, LeakageError, check_no_leakage, features
from gateway.scores.ledger import Ledger, ledger_from
from gateway.scores.metrics import auc
from gateway.scores.propensity import labels
from gateway.scores.rfm import SEGMENTS, quintile, rfm, segment_of
from tests.scores.synthetic import START, history


def _peeking(ledger: Ledger, cutoff: int, horizon: int) -> Features:
    """A feature that counts every purchase, the later ones too (the classic leak)."""
    table = features(ledger, cutoff, horizon)
    everything = np.bincount(ledger.customer, minlength=ledger.size).astype(np.float64)
    return Features((*table.names, "all_orders"), np.column_stack([table.values, everything]))


def test_the_features_read_nothing_after_the_cut_off() -> None:
    ledger = history(300)
    table = check_no_leakage(features, ledger, START + 200, 60)
    assert table.values.shape[0] == ledger.size
    assert (table.column("recency_days")[table.column("frequency") > 0] >= 0).all()


def test_a_feature_reading_after_the_cut_off_fails_the_check_and_the_evaluation() -> None:
    ledger = history(300)
    with pytest.raises(LeakageError, match="all_orders"):
        check_no_leakage(_peeking, ledger, START + 200, 60)
    with pytest.raises(LeakageError):
        evaluate(ledger, START + 300, 90, function=_peeking)


def test_purchases_on_one_day_are_one_visit_with_their_amounts_summed() -> None:
    ledger = ledger_from([("a", 5, 10.0), ("b", 3, 1.0), ("a", 5, 2.5), ("a", 2, 1.0)])
    assert list(ledger.keys) == ["a", "b"]
    assert ledger.day.tolist() == [2, 5, 3]
    assert ledger.amount.tolist() == [1.0, 12.5, 1.0]


@given(st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=60))
def test_quintiles_give_equal_values_equal_scores_and_the_best_five(values: list[int]) -> None:
    array = np.asarray(values, np.float64)
    known = np.ones(len(values), bool)
    score = quintile(array, known, smaller_is_better=False)
    assert set(score.tolist()) <= {1, 2, 3, 4, 5}
    for value in set(values):
        assert len(set(score[array == value].tolist())) == 1
    assert score[array == array.min()].max() == 1


def test_the_grid_names_every_cell_and_only_known_segments() -> None:
    names = {segment_of(r, f) for r in range(1, 6) for f in range(1, 6)}
    assert names == set(SEGMENTS)
    assert segment_of(5, 5) == "champions"
    assert segment_of(1, 5) == "cant_lose_them"
    assert segment_of(1, 1) == "lost"
    assert segment_of(0, 0) is None
    grid = rfm(np.array([1.0, 300.0, np.nan]), np.array([9.0, 1.0, 0.0]), np.array([5, 1, 0.0]))
    assert grid.segment[2] is None
    assert grid.r[0] > grid.r[1]


def test_bgnbd_fitted_on_a_sample_still_scores_every_customer_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = history(800)
    cutoff = START + 400
    whole = bgnbd.fit(ledger, cutoff, 30)
    monkeypatch.setattr(bgnbd, "MAX_FIT_CUSTOMERS", 300)
    sampled = bgnbd.fit(ledger, cutoff, 30)
    known = ledger.span(cutoff)[3]
    assert known.sum() > 300  # the cap binds
    assert (sampled.p_alive[known] > 0).all()
    assert (sampled.p_alive[known] <= 1).all()
    # Four parameters from 300 customers: every customer ranked much as the whole fit does.
    assert np.corrcoef(whole.p_purchase[known], sampled.p_purchase[known])[0, 1] > 0.95


def _alive_bound(model: bgnbd.BgNbd, ledger: Ledger, cutoff: int, weeks: float) -> np.ndarray:
    """What a customer alive through the horizon is expected to buy, times P(alive):
    the most the BG/NBD expectation can be (dropout only takes purchases away)."""
    s = bgnbd.summary(ledger, cutoff)
    rate = (model.r + s.x) / (model.alpha + s.age) * weeks
    return np.where(s.known, model.p_alive * rate, 0.0)


def test_bgnbd_expected_purchases_stay_finite_when_the_fit_loses_its_dropout() -> None:
    """A small shop's fit can drive a and b towards 0 (300 demo customers: a ~ 1e-21, b
    ~ 2e-14): lifetimes' closed form then answered inf for every one-time buyer (a
    hypergeometric function at its pole), kept as the largest float, and the scores
    build failed in the logistic part ("Input X contains infinity"). The expectation is
    the no-dropout limit there, and never above it anywhere."""
    ledger = history(300)
    cutoff = START + 400
    fitted = bgnbd.fit(ledger, cutoff, 30)
    collapsed = bgnbd.answer((fitted.r, fitted.alpha, 1.66e-21, 2.4e-14), ledger, cutoff, 30)
    known = ledger.span(cutoff)[3]
    one_time = known & (bgnbd.summary(ledger, cutoff).x == 0)
    assert one_time.any()
    assert np.isfinite(collapsed.expected).all()
    bound = _alive_bound(collapsed, ledger, cutoff, 30 / 7)
    assert np.allclose(collapsed.expected[known], bound[known], rtol=1e-6)
    assert collapsed.expected[known].max() < 10  # a month of a shop's purchases, not 1e308


@given(
    a=st.floats(0.05, 5.0),
    b=st.floats(0.05, 20.0),
    horizon=st.integers(7, 365),
)
def test_bgnbd_expected_purchases_are_lifetimes_own_where_it_answers(
    a: float, b: float, horizon: int
) -> None:
    """The bound changes nothing where lifetimes' closed form is finite: the expectation
    served is lifetimes' own, between 0 and P(alive) times the alive expectation (where
    it is not, as at a = 1 exactly, a removable pole of its formula, the bound is served)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lifetimes sets a pandas option pandas 3 deprecates
        import pandas as pd  # type: ignore[import-untyped]
        from lifetimes import BetaGeoFitter

    ledger = _small_history()
    cutoff = START + 400
    r, alpha = 0.5, 10.0
    model = bgnbd.answer((r, alpha, a, b), ledger, cutoff, horizon)
    s = bgnbd.summary(ledger, cutoff)
    k = s.known
    fitter = BetaGeoFitter()
    fitter.params_ = pd.Series({"r": r, "alpha": alpha, "a": a, "b": b})
    with np.errstate(all="ignore"):
        theirs = np.asarray(
            fitter.conditional_expected_number_of_purchases_up_to_time(
                horizon / 7, s.x[k], s.t_x[k], s.age[k]
            )
        )
    answered = np.isfinite(theirs)
    assert np.allclose(model.expected[k][answered], theirs[answered], rtol=1e-9, atol=1e-12)
    assert np.isfinite(model.expected).all()
    bound = _alive_bound(model, ledger, cutoff, horizon / 7)
    assert (model.expected[k] <= bound[k] * (1 + 1e-9)).all()


_HISTORY: list[Ledger] = []


def _small_history() -> Ledger:
    if not _HISTORY:
        _HISTORY.append(history(120))
    return _HISTORY[0]


# r, alpha, a, b: the fit of the demo's 1,000 customers' orders on 2026-12-05, a month
# after their last order (nobody drops out).
NO_DROPOUT = (1.3508341175661744, 19.576449611282023, 5.57e-24, 1.39e-14)


def test_bgnbd_expected_purchases_are_the_nbd_limit_when_the_fit_has_no_dropout() -> None:
    # Two purchase days 529 days apart, the first 861 days before the cut-off.
    ledger = ledger_from([("a", 0, 10.0), ("a", 529, 20.0)])
    fit = bgnbd.answer(NO_DROPOUT, ledger, 861, 30)
    r, alpha = NO_DROPOUT[0], NO_DROPOUT[1]
    # Without dropout a customer's rate is Gamma(r + x, alpha + T) given their history:
    # E[purchases in t] = (r + x) / (alpha + T) * t (weeks), about 0.07 here.
    wanted = (r + 1) / (alpha + 861 / 7) * (30 / 7)
    assert np.isfinite(fit.expected).all()
    assert fit.expected[0] == pytest.approx(wanted, rel=0.01)


def test_churn_risk_puts_long_lapsed_one_time_buyers_above_recent_regulars() -> None:
    """Churn risk was 1 - BG/NBD's P(alive), which is 1 for anyone without a repeat
    purchase (BG/NBD drops customers out only just after one): every one-time buyer,
    however long gone, scored 0.0, and on CDNOW it ranked "no order in the holdout"
    backwards (ROC AUC 0.33-0.36). Pareto/NBD's chance of no order in 90 days sees
    them lapse."""
    ledger = history(800)
    cutoff = START + 400
    fitted = bgnbd.fit_churn(ledger.upto(cutoff), cutoff)
    assert fitted is not None
    params, risk = fitted
    s = bgnbd.summary(ledger, cutoff)
    gone = s.known & (s.x == 0) & (s.age > 180 / 7)
    regular = s.known & (s.x >= 2) & (s.age - s.t_x < 30 / 7)
    assert gone.sum() > 50
    assert regular.sum() > 20
    assert risk[gone].min() > risk[regular].max()
    assert np.isnan(risk[~s.known]).all()
    assert ((risk[s.known] >= 0) & (risk[s.known] <= 1)).all()
    judged = ledger.first_day() <= cutoff
    lapsed = ~labels(ledger, cutoff, cutoff + 90)[judged]
    assert auc(lapsed, risk[judged]) > 0.8
    # A refresh answers the same with the stored parameters.
    again = bgnbd.churn_with(params, ledger, cutoff)
    assert np.allclose(again, risk, equal_nan=True, rtol=1e-12)


def test_one_buyer_lifetimes_cannot_answer_for_leaves_everyone_else_scored() -> None:
    """lifetimes' Pareto/NBD answer is NaN for a buyer with hundreds of repeat orders,
    the last on the cut-off day (a subscription, a B2B account ordering on build day),
    under any parameters: every penalizer's fit was refused, and the build stored no
    churn risk for anyone. They get the chance of no order while alive (near 0); the
    rest keep lifetimes' answers exactly."""
    shop = history(800)
    cutoff = START + 400
    rows = [
        (shop.keys[c], int(d), float(a))
        for c, d, a in zip(shop.customer, shop.day, shop.amount, strict=True)
    ]
    heavy = [("heavy", cutoff - 2 * n, 20.0) for n in range(200)]  # every other day
    ledger = ledger_from(rows + heavy)
    fitted = bgnbd.fit_churn(ledger.upto(cutoff), cutoff)
    assert fitted is not None
    params, risk = fitted
    s = bgnbd.summary(ledger, cutoff)
    assert np.isfinite(risk[s.known]).all()
    buyer = list(ledger.keys).index("heavy")
    assert risk[buyer] < 0.01  # orders every other day: no order in 90 days is unlikely
    # lifetimes itself fails on them (why the bound is there) and answers the others.
    none = bgnbd._pareto_none(params, s)
    assert not np.isfinite(none[buyer])
    others = s.known & (np.arange(ledger.size) != buyer)
    assert np.allclose(risk[others], none[others], rtol=1e-12)
    assert np.allclose(bgnbd.churn_with(params, ledger, cutoff), risk, equal_nan=True)
