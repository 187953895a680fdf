"""The paired ROC AUC difference the inner split's choice rests on."""

from __future__ import annotations

import numpy as np

from gateway.scores.metrics import auc, auc_difference


def test_delongs_difference_is_the_aucs_and_its_error_the_bootstraps() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    signal = rng.normal(size=n)
    y = rng.random(n) < 1 / (1 + np.exp(-(signal - 1.5)))
    first = signal + rng.normal(scale=0.8, size=n)
    second = np.round(signal + rng.normal(scale=1.0, size=n), 1)  # with ties
    difference, error = auc_difference(y, first, second)
    assert np.isclose(difference, auc(y, first) - auc(y, second))
    resampled = []
    for _ in range(300):
        i = rng.integers(0, n, n)
        resampled.append(auc(y[i], first[i]) - auc(y[i], second[i]))
    assert 0.8 < error / np.std(resampled) < 1.25, (error, np.std(resampled))
    assert auc_difference(y, first, first) == (0.0, 0.0)
    assert all(np.isnan(auc_difference(np.zeros(n, bool), first, second)))
