"""BG/NBD's answers when the fit says nobody drops out (a and b near 0), as the demo's
orders fitted on a day a month after their last order: lifetimes' closed form divides
infinities there, and the expected purchases came out as 1.8e308 (NaN to 0, infinity to
the largest float), which the propensity model's scaler overflowed on: ``gateway scores
build`` stopped with a traceback and wrote no scores."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.scores.bgnbd import answer
from gateway.scores.ledger import ledger_from

# r, alpha, a, b: the fit of the demo's 1,000 customers' orders on 2026-12-05.
NO_DROPOUT = (1.3508341175661744, 19.576449611282023, 5.57e-24, 1.39e-14)


def test_expected_purchases_are_finite_when_the_fit_has_no_dropout() -> None:
    # Two purchase days 529 days apart, the first 861 days before the cut-off.
    ledger = ledger_from([("a", 0, 10.0), ("a", 529, 20.0)])
    fit = answer(NO_DROPOUT, ledger, 861, 30)
    r, alpha = NO_DROPOUT[0], NO_DROPOUT[1]
    # Without dropout a customer's rate is Gamma(r + x, alpha + T) given their history:
    # E[purchases in t] = (r + x) / (alpha + T) * t (weeks), about 0.07 here.
    wanted = (r + 1) / (alpha + 861 / 7) * (30 / 7)
    assert np.isfinite(fit.expected).all()
    assert fit.expected[0] == pytest.approx(wanted, rel=0.01)
