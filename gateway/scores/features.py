"""What the propensity model sees of a customer, as of a cut-off day and nothing after.

``features`` reads the ledger only through ``Ledger.upto(cutoff)``; ``check_no_leakage``
proves it for any feature function by computing the table twice, from the whole
ledger and from the ledger cut at the cut-off, and failing when they differ: a
feature that peeks at a later purchase or event changes between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gateway.scores import bgnbd
from gateway.scores.ledger import Floats, Ledger

WINDOWS = (30, 90, 180, 365)
# The RFM-only baseline's inputs (log scale, as a logistic regression wants them).
RFM_COLUMNS = ("log_recency", "log_frequency", "log_monetary")


class LeakageError(Exception):
    """A feature read data after the cut-off: the evaluation would flatter the model."""


@dataclass(frozen=True)
class Features:
    names: tuple[str, ...]
    values: Floats  # customers x names
    bgnbd: tuple[float, ...] | None = None  # the BG/NBD fit's (r, alpha, a, b), if any

    def column(self, name: str) -> Floats:
        return self.values[:, self.names.index(name)]

    def only(self, names: tuple[str, ...]) -> Floats:
        return self.values[:, [self.names.index(n) for n in names]]


FeatureFunction = Callable[[Ledger, int, int], Features]


def features(ledger: Ledger, cutoff: int, horizon_days: int) -> Features:
    """Each customer's recency, frequency, monetary value, recent counts and spend,
    rhythm, engagement and BG/NBD's view of them, as of day ``cutoff``."""
    return _table(ledger, cutoff, horizon_days, None, fit=True)


def features_with(
    bgnbd_params: tuple[float, ...] | None, ledger: Ledger, cutoff: int, horizon_days: int
) -> Features:
    """``features`` with BG/NBD's answers from a build's fit (or none, when the build
    had none) instead of a new fit: a refresh's few customers are no population."""
    return _table(ledger, cutoff, horizon_days, bgnbd_params, fit=False)


def _table(
    ledger: Ledger,
    cutoff: int,
    horizon_days: int,
    params: tuple[float, ...] | None,
    *,
    fit: bool,
) -> Features:
    seen = ledger.upto(cutoff)
    n = ledger.size
    who, day, amount = seen.customer, seen.day, seen.amount
    count, first, last, known = ledger.span(cutoff)
    spend: Floats = np.bincount(who, weights=amount, minlength=n).astype(np.float64)
    recency = np.where(known, cutoff - last, np.nan).astype(np.float64)
    age = np.where(known, cutoff - first, np.nan).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.where(count > 1, (last - first) / (count - 1), np.nan)
        aov = np.where(known, spend / count, np.nan)
    columns: dict[str, Floats] = {
        "recency_days": recency,
        "age_days": age,
        "frequency": count,
        "monetary": spend,
        "aov": aov,
        "gap_days": gap,
        "overdue": recency / gap,
    }
    for window in WINDOWS:
        inside = day > cutoff - window
        columns[f"orders_{window}d"] = np.bincount(who[inside], minlength=n).astype(np.float64)
        columns[f"spend_{window}d"] = np.bincount(
            who[inside], weights=amount[inside], minlength=n
        ).astype(np.float64)
    for window in (30, 90):
        inside = seen.event_day > cutoff - window
        columns[f"engagement_{window}d"] = np.bincount(
            seen.event_customer[inside], minlength=n
        ).astype(np.float64)
    model = None
    if fit and known.sum() >= 50:
        model = bgnbd.fit(seen, cutoff, horizon_days)
    elif params is not None:
        model = bgnbd.answer(params, seen, cutoff, horizon_days)
    if model is not None:
        columns["bgnbd_p_alive"] = model.p_alive
        columns["bgnbd_expected"] = model.expected
    columns["log_recency"] = np.log1p(np.nan_to_num(recency, nan=10_000.0))
    columns["log_frequency"] = np.log1p(count)
    columns["log_monetary"] = np.log1p(spend)
    names = tuple(columns)
    values = np.column_stack([columns[name] for name in names])
    fitted = None if model is None else (model.r, model.alpha, model.a, model.b)
    return Features(names, values, fitted)


def check_no_leakage(
    function: FeatureFunction, ledger: Ledger, cutoff: int, horizon_days: int
) -> Features:
    """``function``'s table as of ``cutoff``, after proving it reads nothing later:
    raises ``LeakageError`` naming the features that do."""
    table = function(ledger, cutoff, horizon_days)
    later = ledger.day > cutoff
    if not later.any():
        return table  # nothing after the cut-off to leak
    blind = function(ledger.upto(cutoff), cutoff, horizon_days)
    leaking = [
        name
        for i, name in enumerate(table.names)
        if not np.allclose(table.values[:, i], blind.values[:, i], equal_nan=True, rtol=1e-9)
    ]
    if leaking:
        raise LeakageError(
            f"features read data after the cut-off: {', '.join(leaking)}; refusing to train"
        )
    return table


def memo(function: FeatureFunction) -> FeatureFunction:
    """``function`` remembering its tables by (cut-off, horizon, rows seen): the model
    and the baseline train on the same snapshots, and BG/NBD is worth fitting once."""
    tables: dict[tuple[int, int, int, int], Features] = {}

    def remembered(ledger: Ledger, cutoff: int, horizon_days: int) -> Features:
        key = (cutoff, horizon_days, len(ledger.day), len(ledger.event_day))
        if key not in tables:
            tables[key] = function(ledger, cutoff, horizon_days)
        return tables[key]

    return remembered
