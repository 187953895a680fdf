"""``scores eval`` on a synthetic shop: all three models on one time split."""

from __future__ import annotations

from gateway.scores.evaluation import evaluate
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
