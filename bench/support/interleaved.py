"""A cost measured by switching it on and off twice a second under one load: what
turns of ten seconds could not separate from the machine's noise.

Turns of 10 s, alternated (``bench.impressions --turns``), moved a p99 ratio by 5-15 %
from one turn to the next: other work on the shared machine comes and goes over
seconds, and a turn takes all of it on one side. Here one load generator runs without
a pause while the thing compared is switched every ``window_s`` (half a second), on,
off, on, off...: whatever the machine does over seconds falls on both sides alike.
h2load (Debian's ``nghttp2-client``) logs every request, its start and its latency, so
each request is given to the window it started in (not within ``GUARD_S`` of either of
its switches: the requests in flight at a switch are of neither side), whatever its
latency (kept by when it ended, a slow one would be kept less often than a fast one);
this process's CPU time is read at every switch.

Each ratio's interval is a bootstrap over blocks of adjacent pairs of windows (one on,
one off; ``_BLOCK`` pairs, 4 s, within one run): the blocks drawn again with
replacement, the figures recomputed from their requests, 2,000 times; the 2.5th and
97.5th percentiles. Blocks, not pairs: the machine's drift over a few seconds weighs on
neighbouring pairs alike, and pairs drawn as independent would narrow the interval.
"""

from __future__ import annotations

import itertools
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.support.access import BENCH_KEY

# Around a switch: the requests then in flight (p99 ~10-20 ms at 32 connections) are of
# neither side.
GUARD_S = 0.025
_WARM_UP_S = 1
_BLOCK = 4  # pairs of windows a bootstrap draws together
_DRAWS = 2000
_SEED = 20261206
_OUTCOMES = re.compile(r"requests: .*?(\d+) failed, (\d+) errored, (\d+) timeout")
_STATUSES = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


@dataclass(frozen=True)
class Window:
    """One window of a run: whether the thing compared was on, the latencies (ms) of the
    requests that ran in it, the requests that ended in it, its length and the CPU
    seconds this process used in it."""

    on: bool
    latencies_ms: npt.NDArray[np.float64]
    ended: int
    seconds: float
    cpu_s: float


def run(
    url: str,
    body: bytes,
    switch: Callable[[bool], None],
    *,
    connections: int,
    seconds: int,
    workdir: Path,
    window_s: float = 0.5,
    starts_on: bool = True,
    ended: Callable[[], None] = lambda: None,
) -> list[Window]:
    """One h2load run of ``seconds`` POSTing ``body`` to ``url`` over ``connections``
    (HTTP/1.1, two threads as wrk's), ``switch(on)`` called every ``window_s`` from this
    thread, on first or off first (runs alternately on first and off first weigh a drift
    within a pair on both sides alike), ``ended()`` as soon as the load stops: its
    windows, in order. A request that failed, errored or timed out (h2load does not log
    those) or answered other than 2xx fails the run."""
    if shutil.which("h2load") is None:
        raise SystemExit("the interleaved runs need h2load: apt-get install nghttp2-client")
    data, log = workdir / "body.json", workdir / "requests.tsv"
    data.write_bytes(body)
    log.unlink(missing_ok=True)
    command = [
        "h2load", "--h1", f"-c{connections}", "-t2", "-m1", f"-D{seconds}",
        f"--warm-up-time={_WARM_UP_S}", f"--log-file={log}", f"-d{data}",
        "-H", "content-type: application/json", "-H", f"authorization: Bearer {BENCH_KEY}",
        url,
    ]  # fmt: skip
    generator = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(_WARM_UP_S + 0.2)
    switches: list[tuple[float, float, bool]] = []  # (epoch seconds, CPU seconds, on)
    while generator.poll() is None:
        on = (len(switches) % 2 == 0) == starts_on
        switch(on)
        switches.append((time.time(), process_cpu_s(), on))
        time.sleep(window_s)
    switches.append((time.time(), process_cpu_s(), False))
    ended()
    output = generator.communicate()[0].decode(errors="replace")
    outcomes, statuses = _OUTCOMES.search(output), _STATUSES.search(output)
    if generator.returncode != 0 or not log.exists() or not outcomes or not statuses:
        raise SystemExit(f"h2load failed:\n{output[-2000:]}")
    if any(int(count) for count in (*outcomes.groups(), *statuses.groups()[1:])):
        raise SystemExit(f"requests failed during the run:\n{output[-2000:]}")
    return windows(np.loadtxt(log, dtype=np.int64, ndmin=2), switches)


def windows(
    log: npt.NDArray[np.int64], switches: Sequence[tuple[float, float, bool]]
) -> list[Window]:
    """h2load's log (a request a row: start in us since the epoch, status, latency in
    us) given to the windows between ``switches`` ((epoch seconds, CPU seconds, on)).
    Left out: windows opened before the first request logged (h2load's warm-up, not
    logged, may end late) and the last two (the load ended in the last, or just before
    its switch). A request answered other than 200 fails the run."""
    if np.any(log[:, 1] != 200):
        raise SystemExit("a request failed during the run")
    start = log[:, 0] / 1e6
    end = start + log[:, 2] / 1e6
    first = start.min() if len(start) else float("inf")
    found = []
    for (opened, cpu, on), (closed, cpu_after, _) in itertools.pairwise(switches[:-2]):
        if opened < first:
            continue
        inside = (start >= opened + GUARD_S) & (start < closed - GUARD_S)
        found.append(
            Window(
                on=on,
                latencies_ms=(end[inside] - start[inside]) * 1000,
                ended=int(np.count_nonzero((end > opened) & (end <= closed))),
                seconds=closed - opened,
                cpu_s=cpu_after - cpu,
            )
        )
    return found


def process_cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


@dataclass(frozen=True)
class Compared:
    """A figure with and without, their ratio and its 95 % bootstrap interval."""

    on: float
    off: float
    ratio: float
    low: float
    high: float


def compare(runs: Sequence[Sequence[Window]]) -> dict[str, Compared]:
    """p50 and p99 (ms), throughput (req/s) and CPU per request (ms), on against off,
    over the pairs of adjacent windows of each run (each run's windows in order; a last
    odd one left out), bootstrapped by blocks of ``_BLOCK`` pairs within a run."""
    blocks: list[list[tuple[Window, Window]]] = []
    for found in runs:
        pairs = [
            (first, second) if first.on else (second, first)
            for first, second in zip(found[0::2], found[1::2], strict=False)
            if first.on != second.on
        ]
        blocks += [pairs[at : at + _BLOCK] for at in range(0, len(pairs), _BLOCK)]
    if sum(map(len, blocks)) < 10:
        raise SystemExit(f"only {sum(map(len, blocks))} pairs of windows: run longer")
    draws = np.random.default_rng(_SEED).integers(0, len(blocks), (_DRAWS, len(blocks)))

    def sides(chosen: Sequence[int]) -> tuple[list[Window], list[Window]]:
        pairs = [pair for at in chosen for pair in blocks[at]]
        return [pair[0] for pair in pairs], [pair[1] for pair in pairs]

    point = [_figures(side) for side in sides(range(len(blocks)))]
    drawn = [[_figures(side) for side in sides(chosen)] for chosen in draws.tolist()]
    compared = {}
    for at, name in enumerate(("p50", "p99", "rps", "cpu_ms")):
        ratios = [on[at] / off[at] for on, off in drawn]
        low, high = np.percentile(ratios, [2.5, 97.5])
        on, off = point[0][at], point[1][at]
        compared[name] = Compared(on, off, on / off, float(low), float(high))
    return compared


def _figures(side: Sequence[Window]) -> tuple[float, float, float, float]:
    """p50, p99, req/s and CPU ms a request over ``side``'s windows pooled."""
    p50, p99 = np.percentile(np.concatenate([w.latencies_ms for w in side]), [50, 99])
    ended = sum(w.ended for w in side)
    return (
        float(p50),
        float(p99),
        ended / sum(w.seconds for w in side),
        1000 * sum(w.cpu_s for w in side) / ended,
    )
