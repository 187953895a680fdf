"""A customer's variant: the same on every instance (another process, another hash
seed), the weights honoured over 100,000 simulated customers, bad experiments refused
naming the field."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import InvalidInput
from gateway.experiments.assignment import experiment

START = datetime(2026, 12, 1, tzinfo=UTC)
END = START + timedelta(days=14)
WEIGHTS = (("control", "popularity", 1.0), ("personal", "item_to_item", 2.0), ("hold", "none", 1.0))


def test_weights_are_honoured_within_sampling_error() -> None:
    found = experiment("recs-dec", WEIGHTS, START, END)
    customers = 100_000
    counts = Counter(found.variant_of(uuid.uuid4()).name for _ in range(customers))
    total = sum(w for *_, w in WEIGHTS)
    for name, _, weight in WEIGHTS:
        share = weight / total
        sigma = (customers * share * (1 - share)) ** 0.5
        assert abs(counts[name] - customers * share) < 5 * sigma, counts


def test_a_customer_has_one_variant_on_every_instance() -> None:
    found = experiment("recs-dec", WEIGHTS, START, END)
    customers = [uuid.UUID(int=n * 7919 + 1) for n in range(200)]
    here = [found.variant_of(c).name for c in customers]
    assert here == [found.variant_of(c).name for c in customers]  # every send
    script = (
        "import uuid, datetime as d\n"
        "from gateway.experiments.assignment import experiment\n"
        "s = d.datetime(2026, 12, 1, tzinfo=d.UTC)\n"
        f"e = experiment('recs-dec', {WEIGHTS!r}, s, s + d.timedelta(days=14))\n"
        "print(','.join(e.variant_of(uuid.UUID(int=n * 7919 + 1)).name for n in range(200)))\n"
    )
    for seed in ("1", "2"):  # another process, another string hash salt
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            cwd=".",
        ).stdout
        assert out.strip().split(",") == here


def test_experiments_are_independent() -> None:
    """Being in one experiment's first variant says nothing about another's."""
    one = experiment("a", (("x", "popularity", 1), ("y", "none", 1)), START, END)
    two = experiment("b", (("x", "popularity", 1), ("y", "none", 1)), START, END)
    pairs = Counter(
        (one.variant_of(c).name, two.variant_of(c).name)
        for c in (uuid.uuid4() for _ in range(20_000))
    )
    for count in pairs.values():
        assert abs(count - 5000) < 5 * (20_000 * 0.25 * 0.75) ** 0.5


def test_running_between_start_and_end() -> None:
    found = experiment("recs-dec", WEIGHTS, START, END)
    assert not found.running(START - timedelta(seconds=1))
    assert found.running(START)
    assert not found.running(END)


@pytest.mark.parametrize(
    ("name", "variants", "start", "end", "field"),
    [
        ("", WEIGHTS, START, END, "name"),
        ("x", WEIGHTS[:1], START, END, "variants"),
        ("x", (*WEIGHTS[:1], ("b", "magic", 1.0)), START, END, "variants.1.strategy"),
        ("x", (*WEIGHTS[:1], ("b", "none", 0.0)), START, END, "variants.1.weight"),
        ("x", (*WEIGHTS[:1], ("b", "none", float("nan"))), START, END, "variants.1.weight"),
        ("x", (*WEIGHTS[:1], ("control", "none", 1.0)), START, END, "variants"),
        ("x", WEIGHTS, END, START, "end"),
        ("x", WEIGHTS, START.replace(tzinfo=None), END, "start"),
    ],
)
def test_bad_experiments_are_refused_naming_the_field(
    name: str,
    variants: tuple[tuple[str, str, float], ...],
    start: datetime,
    end: datetime,
    field: str,
) -> None:
    with pytest.raises(InvalidInput) as refused:
        experiment(name, variants, start, end)
    assert refused.value.field == field
