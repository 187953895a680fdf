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


def test_interleaved_windows_take_only_the_requests_run_inside_them() -> None:
    """bench/support/interleaved.py: a request counts for the window it started in, not
    near either of its switches, whatever its latency; the last two windows (the load
    ended in or near them) and those before the first request logged are left out; a
    failed request fails the run rather than being timed."""
    import numpy as np

    from bench.support.interleaved import GUARD_S, windows

    t0 = 1_000.0
    switches = [
        (t0, 10.0, True),
        (t0 + 0.5, 10.2, False),
        (t0 + 1.0, 10.3, True),
        (t0 + 1.4, 10.4, False),
        (t0 + 1.6, 10.5, False),
    ]

    def us(seconds: float) -> int:
        return round(seconds * 1e6)

    log = np.array(
        [
            [us(t0 - 0.3), 200, us(0.002)],  # before the first switch: of neither
            [us(t0 + 0.1), 200, us(0.004)],  # inside the first
            [us(t0 + GUARD_S / 2), 200, us(0.002)],  # in the guard: of neither side
            [us(t0 + 0.49), 200, us(0.02)],  # in the guard before the switch: of neither
            [us(t0 + 0.6), 200, us(0.5)],  # started in the second: a slow one counts
            [us(t0 + 0.7), 200, us(0.01)],  # inside the second
            [us(t0 + 1.1), 200, us(0.01)],  # in a window left out
        ],
        dtype=np.int64,
    )
    found = windows(log, switches)
    assert [w.on for w in found] == [True, False]
    assert found[0].latencies_ms.tolist() == pytest.approx([4.0])
    assert found[1].latencies_ms.tolist() == pytest.approx([500.0, 10.0])
    assert [w.ended for w in found] == [2, 2]
    assert [w.cpu_s for w in found] == pytest.approx([0.2, 0.1])
    assert [w.seconds for w in found] == pytest.approx([0.5, 0.5])
    # h2load's warm-up (not logged) ran into the first window: that window is left out.
    assert [w.on for w in windows(log[1:], switches)] == [False]
    log[5, 1] = 503
    with pytest.raises(SystemExit, match="failed"):
        windows(log, switches)


def test_interleaved_comparison_finds_a_known_cost_and_no_cost_where_there_is_none() -> None:
    """Windows whose requests are 8 % slower with the thing on (and cost 8 % more CPU)
    than the same draws without: the ratios are found and their intervals hold them; the
    same draws on both sides give intervals that hold 1 about as often as they say."""
    import numpy as np

    from bench.support.interleaved import Window, compare

    draws = np.random.default_rng(7)

    def made(cost: float, size: int = 300) -> list[Window]:
        found = []
        for at in range(80):
            on = at % 2 == 0
            latencies = draws.lognormal(2.0, 0.4, size) * (cost if on else 1.0)
            cpu = size * 0.0003 * (cost if on else 1.0)
            found.append(Window(on, latencies, size, 0.5, cpu))
        return found

    costly = compare([made(1.08)])
    for name in ("p50", "p99", "cpu_ms"):
        assert costly[name].low < 1.08 < costly[name].high or costly[name].ratio == pytest.approx(
            1.08
        )
        assert costly[name].low > 1.0
    # No cost: the 95 % intervals hold 1 about 95 % of the time (two runs of 40 windows).
    covered = {"p50": 0, "p99": 0}
    for _ in range(20):
        found = made(1.0, size=100)
        free = compare([found[:40], found[40:]])
        for name in covered:
            covered[name] += free[name].low <= 1.0 <= free[name].high
        assert free["cpu_ms"].ratio == pytest.approx(1.0)
    assert min(covered.values()) >= 16, covered
    with pytest.raises(SystemExit, match="run longer"):
        compare([made(1.0)[:8]])
