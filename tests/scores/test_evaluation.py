"""``scores eval`` on a synthetic shop: all three models on one time split."""

from __future__ import annotations

import pickle

import numpy as np

from gateway.scores.evaluation import evaluate
from gateway.scores.features import RFM_COLUMNS, Features, features, memo
from gateway.scores.ledger import Ledger
from gateway.scores.propensity import thread_limits, train
from tests.scores.synthetic import START, history


def test_the_model_and_both_baselines_are_measured_on_the_same_split() -> None:
    ledger = history(1500)
    report = evaluate(ledger, START + 360, 120)
    names = [row.name for row in report.rows]
    assert names[0].startswith("propensity")
    assert any("RFM" in n for n in names)
    assert any("BG/NBD" in n for n in names)
    for row in report.rows:
        assert 0.5 < row.metrics.auc <= 1.0, row
        assert row.metrics.lift > 1.0
    assert 0 < report.base_rate < 1
    text = "\n".join(report.lines("synthetic"))
    assert "ROC AUC" in text
    assert "by RFM segment" in text
    # Probabilities, calibrated: the model's ECE is a fraction, not a count.
    assert 0 <= report.rows[0].metrics.ece < 0.2


def _turncoat(ledger: Ledger, cutoff: int, horizon: int) -> Features:
    """``features`` and a column that is log recency up to day START + 200 and its
    opposite after: it helps every model reading it on the inner split's training
    snapshots, and misleads them on the inner split itself (read only up to the
    cut-off: no leakage, only a shift)."""
    table = features(ledger, cutoff, horizon)
    sign = 1.0 if cutoff < START + 200 else -1.0
    turned = sign * table.column("log_recency")
    values = np.column_stack([table.values, turned])
    return Features((*table.names, "turncoat"), values, table.bgnbd)


def test_a_model_ranking_below_a_baseline_before_the_cut_off_is_not_served() -> None:
    # The inner split is at START + 240 (window 120), its training snapshots before
    # START + 200: the models reading every column learn the turncoat and fail there.
    ledger = history(1500)
    cutoff = START + 360
    function = memo(_turncoat)
    with thread_limits(1):  # OpenMP threads spin on a busy machine (as evaluate limits)
        model = train(ledger.upto(cutoff), cutoff, 120, function)
    baselines = (list(RFM_COLUMNS), ["bgnbd_expected"])
    assert model.setting.get("columns") in baselines, model.validation
    best = max(model.validation.values())
    assert model.validation["0"] < best, model.validation  # the mean of models
    assert model.family.startswith("logistic on ")
    # It reads its columns from the whole table, and survives the model store's pickle.
    table = function(ledger.upto(cutoff), cutoff, 120)
    stored = pickle.loads(pickle.dumps(model.estimator))
    served = model.estimator.predict_proba(table.values)
    assert np.array_equal(stored.predict_proba(table.values), served)
