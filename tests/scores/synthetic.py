"""A small synthetic purchase history: customers with their own buying rate and a
chance of dropping out after each purchase (the BG/NBD story), so that who buys next
depends on what came before, as in a shop."""

from __future__ import annotations

import numpy as np

from gateway.scores.ledger import Ledger, ledger_from

START = 10_000  # a day number


def history(customers: int = 800, days: int = 540, seed: int = 7) -> Ledger:
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, int, float]] = []
    for c in range(customers):
        rate = rng.gamma(0.8, 1 / 25)  # purchases a day
        drop = rng.beta(1, 4)
        day = START + int(rng.integers(0, 90))
        spend = rng.gamma(3, 15)
        _purchases(rows, rng, f"c{c}", day, START + days, spend, drop, rate)
    return ledger_from(rows)


def loyal_spenders(customers: int = 400, seed: int = 4, days: int = 540) -> Ledger:
    """``history``'s shop, but a customer's chance of dropping out falls with what they
    spend: value says who stays, which BG/NBD (counting purchases only) cannot see,
    while BG/NBD's expectation reads the buying rate better than a linear regression on
    log recency and frequency does; each baseline holds signal the other lacks."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, int, float]] = []
    for c in range(customers):
        rate = rng.gamma(0.8, 1 / 25)
        spend = rng.gamma(3, 15)
        drop = min(0.95, rng.beta(1, 4) * 40 / spend)
        day = START + int(rng.integers(0, 90))
        _purchases(rows, rng, f"c{c}", day, START + days, spend, drop, rate)
    return ledger_from(rows)


def _purchases(
    rows: list[tuple[str, int, float]],
    rng: np.random.Generator,
    customer: str,
    day: int,
    end: int,
    spend: float,
    drop: float,
    rate: float,
) -> None:
    """One customer's orders from ``day`` until they drop out or ``end``."""
    while day < end:
        rows.append((customer, day, float(spend * rng.uniform(0.5, 1.5))))
        if rng.random() < drop:
            break
        day += 1 + int(rng.exponential(1 / rate))
