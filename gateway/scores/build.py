"""``gateway scores build``: every customer's traits and scores, computed from the
stored orders and events and written in one transaction.

The propensity model serving is kept across builds. ``retrain`` trains a candidate on
everything up to ``horizon`` days ago and judges it on the last ``horizon`` days (who
bought); the one serving is judged on the same holdout, and the candidate replaces it
only when it does at least as well (ROC AUC). A stored model whose seal does not check
(``model_seal``: stored before sealing, or altered) is never loaded: the build goes on
as if there were none, and trains one. Churn risk is Pareto/NBD's probability of no
order in the next ``bgnbd.CHURN_DAYS`` days, fitted with every build (``bgnbd``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from gateway.db.score_models import ScoreBuild
from gateway.scores import bgnbd
from gateway.scores.features import (
    FeatureFunction,
    Features,
    check_no_leakage,
    features,
    memo,
)
from gateway.scores.ledger import Floats, Ledger, day_of
from gateway.scores.metrics import auc
from gateway.scores.model_seal import UntrustedModel
from gateway.scores.propensity import MAX_TRAINING_ROWS, labels, thread_limits, train
from gateway.scores.rfm import Boundaries, boundaries, rfm_with
from gateway.scores.store import ScoreStore, StoredModel

_EVENT_HISTORY_DAYS = 400
logger = logging.getLogger("gateway.scores")


class ScoresBusy(Exception):
    """A build or a refresh is writing scores now."""


@dataclass(frozen=True)
class BuildSummary:
    customers: int
    with_orders: int
    model_version: str
    decision: str
    seconds: float

    def line(self) -> str:
        return (
            f"scored {self.customers:,} customers ({self.with_orders:,} with orders) with "
            f"model {self.model_version} in {self.seconds:.1f} s; {self.decision}"
        )


def _holdout_auc(estimator: Any, x: Floats, y: np.ndarray) -> float:
    return auc(y, estimator.predict_proba(x)[:, 1])


def _candidate(
    ledger: Ledger, today: int, horizon: int, function: FeatureFunction, seed: int, max_rows: int
) -> tuple[Any, dict[str, Any], Floats, np.ndarray]:
    cut = today - horizon
    model = train(ledger.upto(cut), cut, horizon, function, seed=seed, max_rows=max_rows)
    judged = ledger.first_day() <= cut
    x = function(ledger.upto(cut), cut, horizon).values[judged]
    y = labels(ledger, cut, today)[judged]
    evaluation = {
        "holdout_from": cut,
        "holdout_days": horizon,
        "auc": _holdout_auc(model.estimator, x, y),
        "setting": model.setting,
        "window": model.window,
        "training_rows": model.rows,
        "training_rows_available": model.available,
        "training_rows_cap": max_rows,
    }
    return model.estimator, evaluation, x, y


async def build(
    store: ScoreStore,
    *,
    horizon: int = 30,
    retrain: bool = False,
    now: datetime | None = None,
    function: FeatureFunction = features,
    seed: int = 42,
    max_training_rows: int = MAX_TRAINING_ROWS,
    threads: int = 1,
) -> BuildSummary:
    """Score every stored customer; raises ``LeakageError`` if ``function`` reads past
    the cut-offs it is given. ``threads`` caps the BLAS and OpenMP threads of the
    fitting: on a 2-core machine at load 20 a boosted-trees fit took 237 s with two OpenMP
    threads and 5.5 s with one (threads spin waiting for each other's cores)."""
    async with store.exclusive() as mine:
        if not mine:
            raise ScoresBusy("a scores build or refresh is running: try again later")
        with thread_limits(threads):
            return await _build(store, horizon, retrain, now, function, seed, max_training_rows)


async def _build(
    store: ScoreStore,
    horizon: int,
    retrain: bool,
    now: datetime | None,
    function: FeatureFunction,
    seed: int,
    max_rows: int,
) -> BuildSummary:
    started = time.perf_counter()
    # Stamped before the read: an event changed later is newer than the rows (refresh).
    now = now or await store.stamp()
    today = day_of(now)
    function = memo(function)
    ledger = await store.ledger(now - timedelta(days=_EVENT_HISTORY_DAYS))
    table = check_no_leakage(function, ledger, today, horizon)
    stored = await store.active_model()
    estimator: Any = None
    version = "none"
    decision = "no model: too little order history to train on"
    refused = ""
    trained: tuple[StoredModel, bool] | None = None  # a new model, sealed, and if it serves
    if stored is not None and stored.horizon_days == horizon:
        try:
            estimator, version = store.unseal(stored), stored.version
            decision = f"kept model {version} (no --retrain)"
        except UntrustedModel:
            # As if there were none: models stored before sealing are unsigned, and the
            # nightly build must not stop scoring over them; nothing of it was run.
            logger.warning(
                "score model %s is unsigned, altered or not its row's: not loaded; "
                "training a new one",
                stored.version,
            )
            refused = f"refused model {stored.version} (unsigned or altered); "
    if retrain or estimator is None:
        try:
            candidate, evaluation, x, y = _candidate(
                ledger, today, horizon, function, seed, max_rows
            )
        except ValueError:
            candidate = None
        if candidate is not None:
            new_version = f"hgb-{now:%Y%m%d%H%M%S}"
            old_auc = float("nan")
            if estimator is not None:
                try:
                    old_auc = _holdout_auc(estimator, x, y)
                except ValueError:
                    old_auc = float("nan")  # trained on other features: cannot compete
            # At least as well: a tie goes to the newer model (fresher data).
            better = bool(np.isnan(old_auc) or evaluation["auc"] >= old_auc)
            evaluation["previous"] = {"version": version, "auc": old_auc}
            # Saved (and made active) with the scores it makes, in their transaction: a
            # build that fails scoring or writing them leaves the model that made the
            # stored scores active.
            trained = (store.seal(new_version, horizon, _json_safe(evaluation), candidate), better)
            if better:
                decision = (
                    f"new model {new_version}: holdout AUC {evaluation['auc']:.4f} "
                    f"(previous {version}: {old_auc:.4f})"
                )
                estimator, version = candidate, new_version
            else:
                decision = (
                    f"kept model {version}: holdout AUC {old_auc:.4f} beats the new "
                    f"{new_version}'s {evaluation['auc']:.4f}"
                )
    decision = refused + decision
    bounds = boundaries(
        table.column("recency_days"), table.column("frequency"), table.column("monetary")
    )
    # Apart from the features: the propensity model reads the same columns as before.
    fitted = bgnbd.fit_churn(ledger, today)
    churn = np.full(ledger.size, np.nan) if fitted is None else fitted[1]
    records = records_of(
        ledger.keys, table, bounds, estimator, version, now, ledger.order_counts(today), churn
    )
    fixed = {
        "rfm": bounds.json(),
        "bgnbd": None if table.bgnbd is None else list(table.bgnbd),
        "features": list(table.names),
        # A refresh scores churn with these (and none where the build had no fit, as
        # the build stored none); a build from before they were stored has no "churn"
        # at all, and a refresh after it falls back to the BG/NBD fit above (``refresh``).
        "churn": {"model": "none"}
        if fitted is None
        else {"model": "pareto_nbd", "params": list(fitted[0]), "days": bgnbd.CHURN_DAYS},
    }
    await store.replace_scores(
        records,
        ScoreBuild(built_at=now, horizon_days=horizon, model_version=version, parameters=fixed),
        trained,
    )
    return BuildSummary(
        ledger.size,
        int((table.column("frequency") > 0).sum()),
        version,
        decision,
        time.perf_counter() - started,
    )


def _json_safe(value: Any) -> Any:
    """NaN (an AUC on a holdout with one class) as null: JSON on Postgres has no NaN."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def records_of(
    keys: Sequence[str],
    table: Features,
    bounds: Boundaries,
    estimator: Any,
    version: str,
    now: datetime,
    orders: Floats,
    churn: Floats,
) -> list[tuple[Any, ...]]:
    """Rows in ``store.COLUMNS`` order, RFM scored against ``bounds``; ``orders``: each
    customer's orders placed (their average order value's divisor); ``churn``: their
    churn risk (NaN: none)."""
    frequency = table.column("frequency")
    recency = table.column("recency_days")
    monetary = table.column("monetary")
    grid = rfm_with(bounds, recency, frequency, monetary)
    propensity = (
        estimator.predict_proba(table.values)[:, 1]
        if estimator is not None
        else np.full(len(frequency), np.nan)
    )

    def value(x: float) -> float | None:
        return None if np.isnan(x) else float(x)

    # Spend over orders, not over purchase days (the model's ``aov``, as ``frequency``
    # counts days): two orders on one day are two orders to a marketer.
    with np.errstate(divide="ignore", invalid="ignore"):
        aov = np.where(orders > 0, monetary / orders, np.nan)
    gap = table.column("gap_days")
    e30, e90 = table.column("engagement_30d"), table.column("engagement_90d")
    return [
        (
            uuid.UUID(key),
            None if np.isnan(recency[i]) else int(recency[i]),
            int(frequency[i]),
            float(monetary[i]),
            value(aov[i]),
            value(gap[i]),
            int(grid.r[i]),
            int(grid.f[i]),
            int(grid.m[i]),
            grid.segment[i],
            int(e30[i]),
            int(e90[i]),
            value(propensity[i]),
            value(churn[i]),
            version,
            now,
        )
        for i, key in enumerate(keys)
    ]
