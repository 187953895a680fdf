"""``gateway scores eval``: the propensity model against an RFM-only logistic
regression and BG/NBD, on one time split: everything up to the cut-off to learn from,
"bought in the horizon after it" to judge by. The customers judged are those who had
bought by the cut-off. Churn risk (``bgnbd.fit_churn``, as the build serves it) is
judged on the same split by "no order in the horizon", beside recency alone."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from gateway.scores import bgnbd
from gateway.scores.features import (
    RFM_COLUMNS,
    FeatureFunction,
    check_no_leakage,
    features,
    memo,
)
from gateway.scores.ledger import Ledger, date_of
from gateway.scores.metrics import Metrics, auc, auc_by_group, measure
from gateway.scores.propensity import (
    Propensity,
    labels,
    thread_limits,
    train,
    train_rfm_logistic,
)
from gateway.scores.rfm import rfm


@dataclass(frozen=True)
class Row:
    name: str
    metrics: Metrics
    note: str = ""


@dataclass(frozen=True)
class Report:
    cutoff: int
    horizon: int
    customers: int
    base_rate: float
    rows: list[Row]
    segments: dict[str, dict[str, tuple[int, float]]]  # model → segment → (size, AUC)
    model: Propensity
    seconds: float
    churn: dict[str, float]  # ranker → ROC AUC for "no order in the horizon"
    last_day: int | None = None  # the last day the data covers

    def lines(self, title: str) -> list[str]:
        width = max(26, *(len(row.name) + 2 for row in self.rows))  # the served model's name
        out = [
            f"\n{title}: cut-off {date_of(self.cutoff)}, horizon {self.horizon} days "
            f"(holdout to {date_of(self.cutoff + self.horizon)}); {self.customers:,} customers "
            f"with an order by the cut-off, {self.base_rate:.1%} bought in the horizon",
            f"  model trained on {self.model.snapshots} snapshot(s) before the cut-off, label "
            f"window {self.model.window} days; settings {self.model.setting} chosen on an "
            f"inner split before the cut-off (AUC by setting: "
            f"{', '.join(f'{k}: {v:.4f}' for k, v in self.model.validation.items()) or 'n/a'})",
            f"  {'':<{width}}{'ROC AUC':>9}{'avg prec':>10}{'lift@10%':>10}{'ECE':>8}{'Brier':>8}",
        ]
        for row in self.rows:
            m = row.metrics
            out.append(
                f"  {row.name:<{width}}{m.auc:>9.4f}{m.average_precision:>10.4f}{m.lift:>10.2f}"
                f"{m.ece:>8.4f}{m.brier:>8.4f}  {row.note}"
            )
        out.append(
            f"  churn: ROC AUC for no order in the horizon ({1 - self.base_rate:.1%} of them): "
            + "; ".join(f"{name} {value:.4f}" for name, value in self.churn.items())
        )
        out.append(
            "  ROC AUC by RFM segment at the cut-off (size; propensity, RFM-logistic, BG/NBD):"
        )
        names = list(self.segments)
        for segment, (size, _) in self.segments[names[0]].items():
            aucs = "  ".join(f"{self.segments[n][segment][1]:.3f}" for n in names)
            out.append(f"    {segment:<22}{size:>7,}  {aucs}")
        end = self.cutoff + self.horizon
        if self.last_day is not None and self.last_day < end:
            out.append(
                f"  note: the data ends on {date_of(self.last_day)}, {end - self.last_day} "
                f"days before the holdout does: labels read only the "
                f"{self.last_day - self.cutoff} days there are (a lifetimes holdout cut at "
                "the data's end reads the same)"
            )
        if self.model.window < self.horizon:
            out.append(
                f"  note: the history before the cut-off is shorter than twice the horizon, "
                f"so the model learnt {self.model.window}-day windows; its probabilities "
                "are for that window (see ECE), its ranking is what AUC measures"
            )
        return out


def evaluate(
    ledger: Ledger,
    cutoff: int,
    horizon: int,
    *,
    function: FeatureFunction = features,
    seed: int = 42,
    threads: int = 1,
    data_end: int | None = None,
) -> Report:
    """All three on the same split, fitting with ``threads`` BLAS/OpenMP threads at
    most. Raises ``LeakageError`` when ``function`` reads past a cut-off,
    ``ValueError`` when there is too little data on one side. ``data_end``: the last
    day the data covers (a file's last purchase when not given; a store read up to
    today covers today, ordered on or not)."""
    with thread_limits(threads):
        return _evaluate(ledger, cutoff, horizon, function, seed, data_end)


def _evaluate(
    ledger: Ledger,
    cutoff: int,
    horizon: int,
    function: FeatureFunction,
    seed: int,
    data_end: int | None,
) -> Report:
    started = time.perf_counter()
    function = memo(function)
    _check_range(ledger, cutoff, horizon)
    judged = ledger.first_day() <= cutoff
    y = labels(ledger, cutoff, cutoff + horizon)[judged]
    if y.all() or not y.any():
        raise ValueError("every judged customer bought in the horizon, or none did")
    history = ledger.upto(cutoff)
    table = check_no_leakage(function, ledger, cutoff, horizon)
    model = train(history, cutoff, horizon, function, seed=seed)
    baseline = train_rfm_logistic(history, cutoff, horizon, function)
    bg = bgnbd.fit(history, cutoff, horizon)
    scores = {
        "propensity": model.predict(table.values[judged]),
        "rfm_logistic": baseline.predict(table.only(RFM_COLUMNS)[judged]),
        "bgnbd": bg.p_purchase[judged],
    }
    rows = [
        Row(f"propensity ({model.family})", measure(y, scores["propensity"])),
        Row("RFM logistic", measure(y, scores["rfm_logistic"])),
        Row("BG/NBD P(buy in horizon)", measure(y, scores["bgnbd"])),
        Row(
            "BG/NBD E[purchases]",
            measure(y, bg.expected[judged], probability=False),
            "ranking only",
        ),
    ]
    grid = rfm(table.column("recency_days"), table.column("frequency"), table.column("monetary"))
    groups = [str(s) for s, keep in zip(grid.segment, judged, strict=True) if keep]
    segments = {name: auc_by_group(y, values, groups) for name, values in scores.items()}
    # After everything above, which it leaves as it was.
    fitted = bgnbd.fit_churn(history, cutoff)
    lapsed = ~y
    churn = {
        f"churnRisk (Pareto/NBD P(no order in {bgnbd.CHURN_DAYS} days))": float("nan")
        if fitted is None
        else auc(lapsed, fitted[1][judged]),
        "recency alone (days since the last order)": auc(
            lapsed, table.column("recency_days")[judged]
        ),
        "1 - BG/NBD P(alive)": auc(lapsed, 1.0 - bg.p_alive[judged]),
    }
    return Report(
        cutoff,
        horizon,
        int(judged.sum()),
        float(np.mean(y)),
        rows,
        segments,
        model,
        time.perf_counter() - started,
        churn,
        int(ledger.day.max()) if data_end is None else data_end,
    )


def _check_range(ledger: Ledger, cutoff: int, horizon: int) -> None:
    """A cut-off the data can judge: at least one purchase on or before it and one after
    it, each said plainly (both once came out as "every judged customer bought in the
    horizon, or none did", which sent a reader looking at the horizon)."""
    if not len(ledger.day):
        raise ValueError("the data holds no purchase")
    first, last = date_of(int(ledger.day.min())), date_of(int(ledger.day.max()))
    if cutoff < ledger.day.min():
        raise ValueError(f"the cut-off is before the first purchase ({first}): nobody to judge")
    if cutoff >= ledger.day.max():
        raise ValueError(
            f"the cut-off is on or after the last purchase ({last}): nothing to judge by"
        )
