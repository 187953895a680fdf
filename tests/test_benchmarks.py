"""The in-process benchmarks still run end to end (they broke unnoticed once, when
API keys arrived): tiny runs, checked for their figures, not for their speed."""

from __future__ import annotations

import re

import pytest

from bench import fanout, render, send


async def test_fanout_runs_and_prints_its_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    await fanout.run(runs=3, latency_ms=20)
    out = capsys.readouterr().out
    ratio = re.search(r"ratio all-three / slowest single \(\w+\): ([\d.]+)", out)
    assert ratio is not None, out
    # Each query reached its upstreams: a cache in between made the ratio about 0.01.
    assert float(ratio.group(1)) > 0.5, out


async def test_render_runs_and_prints_its_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    await render.run(customers=10, runs=1)
    out = capsys.readouterr().out
    assert re.search(r"ratio gateway / bare python-liquid: [\d.]+", out), out
    assert "upstream calls while warm: {'hubspot': 0, 'shopify': 0, 'segment': 0}" in out


async def test_send_runs_and_prints_its_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    await send.run(customers=30, page=10, latency_ms=5, plan="plus")
    out = capsys.readouterr().out
    assert re.search(r"ratio cold send / physical limit: ([\d.]+|inf)", out), out
    assert "failed renders 0" in out, out
    assert "hubspot 0 (429), shopify 0 (THROTTLED), segment 0 (429)" in out, out
    assert "warm: {'hubspot': 0, 'shopify': 0, 'segment': 0}" in out, out


def test_scores_runs_and_prints_its_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from bench import scores
    from bench.support.harness import database

    with database(prefix="gateway_test_bench_scores") as url:  # postgres
        asyncio.run(scores.run(url, 600))
    out = capsys.readouterr().out
    assert re.search(r"scored 600 customers \(\d+ with orders\)", out), out
    assert re.search(r"build [\d.]+ s \(.*CPU.*\); yardstick .* ratio [\d.]+; load", out), out


async def test_tracing_runs_and_prints_its_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import tracing

    await tracing.run(requests=20, rounds=1)
    out = capsys.readouterr().out
    assert re.search(r"ratio tracing on / off: [\d.]+", out), out
    assert re.search(r"ratio null spans of one request \(6\) / request off: [\d.]+", out), out


@pytest.mark.parametrize("n", [1, 2, 5, 6, 7, 10, 13, 20, 41])
def test_the_median_interval_is_the_narrowest_order_statistics_that_cover_it(n: int) -> None:
    """bench/impressions.py's verdict: the interval's confidence is what the binomial
    gives, at least 95 % from six turns on, and one order statistic further in would
    fall under it; a simulation of a skewed distribution agrees."""
    import random

    from scipy.stats import binom

    from bench.support.intervals import median_interval

    values = [float(v) for v in range(n)]
    low, high, confidence = median_interval(values)
    k = int(low) + 1
    assert high == n - k
    assert confidence == pytest.approx(1 - 2 * binom.cdf(k - 1, n, 0.5))
    if n >= 6:
        assert confidence >= 0.95
        assert k >= n // 2 or 1 - 2 * binom.cdf(k, n, 0.5) < 0.95
    draws = random.Random(n)
    true_median = 1.0  # of 1 + an exponential's median-centred draw below
    covered = 0
    for _ in range(2_000):
        sample = [1.0 + draws.expovariate(1.0) - 0.6931471805599453 for _ in range(n)]
        a, b, _ = median_interval(sample)
        covered += a <= true_median <= b
    assert covered / 2_000 == pytest.approx(confidence, abs=0.03)


@pytest.mark.parametrize(
    ("ratios", "said"),
    [
        ([1.0, 1.01, 1.02], "too few turns"),
        ([1.0, 1.01, 1.02, 1.03, 1.04, 1.02], "(met)"),
        ([1.06, 1.07, 1.08, 1.09, 1.1, 1.06], "(not met)"),
        ([1.0, 1.1, 1.02, 1.03, 1.04, 1.02], "not shown met"),
    ],
)
def test_the_impressions_verdict_says_met_only_when_its_interval_shows_it(
    ratios: list[float], said: str
) -> None:
    from bench.impressions import verdict
    from bench.support.intervals import median_interval

    low, high, confidence = median_interval(ratios)
    found = verdict({"p99_low": low, "p99_high": high, "p99_confidence": confidence})
    assert said in found
    assert "(met)" not in found or said == "(met)"
