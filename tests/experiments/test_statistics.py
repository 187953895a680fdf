"""Intervals and tests checked against scipy's own: the Wilson interval against
``binomtest(...).proportion_ci(method="wilson")``, the two-proportion p-value against a
chi-square test of the 2x2 table without continuity correction."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest, chi2_contingency

from gateway.experiments.statistics import compare, wilson


@st.composite
def counts(draw: st.DrawFn) -> tuple[int, int]:
    trials = draw(st.integers(1, 200_000))
    return draw(st.integers(0, trials)), trials


@settings(max_examples=300, deadline=None)
@given(counts(), st.sampled_from([0.9, 0.95, 0.99]))
def test_the_wilson_interval_is_scipys(found: tuple[int, int], confidence: float) -> None:
    successes, trials = found
    ours = wilson(successes, trials, confidence)
    theirs = binomtest(successes, trials).proportion_ci(confidence, method="wilson")
    assert ours.low == pytest.approx(theirs.low, abs=1e-9)
    assert ours.high == pytest.approx(theirs.high, abs=1e-9)
    assert 0 <= ours.low <= (ours.value or 0) <= ours.high <= 1


@settings(max_examples=300, deadline=None)
@given(counts(), counts())
def test_the_p_value_is_the_chi_square_tests(a: tuple[int, int], b: tuple[int, int]) -> None:
    control, variant = wilson(*a), wilson(*b)
    result = compare(control, variant)
    table = [[a[0], a[1] - a[0]], [b[0], b[1] - b[0]]]
    if result.p_value is None:  # no variation at all: the test is undefined
        assert a[0] + b[0] in (0, a[1] + b[1])
        return
    expected = chi2_contingency(table, correction=False).pvalue
    assert result.p_value == pytest.approx(expected, rel=1e-6, abs=1e-12)
    if a[0]:
        assert result.lift == pytest.approx((b[0] / b[1]) / (a[0] / a[1]) - 1)


def test_a_clear_lift_is_significant_and_none_is_not() -> None:
    clear = compare(wilson(200, 10_000), wilson(300, 10_000))
    assert clear.lift == pytest.approx(0.5)
    assert clear.p_value is not None
    assert clear.p_value < 1e-5
    same = compare(wilson(200, 10_000), wilson(200, 10_000))
    assert same.lift == 0
    assert same.p_value == pytest.approx(1.0)


def test_edges() -> None:
    assert (wilson(0, 0).low, wilson(0, 0).high) == (0, 1)
    assert wilson(0, 50).low == 0
    assert wilson(0, 50).high > 0
    assert wilson(50, 50).high == 1
    assert compare(wilson(0, 0), wilson(1, 2)).p_value is None
    assert compare(wilson(0, 10), wilson(3, 10)).lift is None
    assert not math.isnan(compare(wilson(0, 10), wilson(3, 10)).p_value or 0)
    with pytest.raises(ValueError, match="between"):
        wilson(5, 4)
