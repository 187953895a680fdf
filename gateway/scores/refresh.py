"""``gateway scores refresh``: the traits and scores of only the customers whose orders
or events changed since their row was computed (and of customers with no row yet),
the way the last full build scored everyone.

The build fixed what depends on the whole population: the RFM quintile boundaries,
the BG/NBD and Pareto/NBD fits and the propensity model; a refresh scores each changed customer
against those (no refitting, no retraining), so a refreshed row is comparable with
the others. Changed customers are found in one query and scored in batches of
``batch`` customers, each read (their orders and events only) and written in its own
transaction. Recency ages every day for everyone: that is the nightly build's job.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from gateway.scores import bgnbd
from gateway.scores.build import ScoresBusy, records_of
from gateway.scores.features import features_with
from gateway.scores.ledger import day_of
from gateway.scores.propensity import thread_limits
from gateway.scores.rfm import Boundaries
from gateway.scores.store import ScoreStore

_EVENT_HISTORY_DAYS = 400
BATCH = 2_000


class NoBuildError(Exception):
    """No full build to refresh from."""


@dataclass(frozen=True)
class RefreshSummary:
    changed: int  # customers found changed or unscored
    read: int  # customers whose orders and events were read: the changed ones only
    refreshed: int  # rows written (an erased customer gets none)
    batches: int
    model_version: str
    seconds: float

    def line(self) -> str:
        return (
            f"refreshed {self.refreshed:,} of {self.changed:,} changed customers in "
            f"{self.batches} batch(es) with model {self.model_version} in {self.seconds:.1f} s"
        )


async def refresh(
    store: ScoreStore, *, batch: int = BATCH, now: datetime | None = None, threads: int = 1
) -> RefreshSummary:
    """Rescore the changed customers; raises ``NoBuildError`` before any full build and
    ``ScoresBusy`` while a build or another refresh runs (a cron overlapping itself)."""
    async with store.exclusive() as mine:
        if not mine:
            raise ScoresBusy("a scores build or refresh is running: try again later")
        return await _refresh(store, batch, now, threads)


async def _refresh(
    store: ScoreStore, batch: int, now: datetime | None, threads: int
) -> RefreshSummary:
    started = time.perf_counter()
    build = await store.last_build()
    if build is None:
        raise NoBuildError("no scores build yet: run `gateway scores build` first")
    params = build.parameters
    bounds = Boundaries.of(params["rfm"])
    fit = None if params.get("bgnbd") is None else tuple(params["bgnbd"])
    names = tuple(params["features"])
    churn = params.get("churn")  # absent from a build made before churn had a fit of its own
    # Stamped before the reads: an event changed after it makes the customer change again.
    now = now or await store.stamp()
    today = day_of(now)
    changed = await store.changed()
    written = batches = read = 0
    if not changed:  # nothing to do: not even loading scikit-learn (1-2 s)
        return RefreshSummary(0, 0, 0, 0, build.model_version, time.perf_counter() - started)
    estimator: Any = None
    if build.model_version != "none":
        stored = await store.model(build.model_version)
        estimator = None if stored is None else store.unseal(stored)
    with thread_limits(threads):
        for start in range(0, len(changed), batch):
            ids: list[uuid.UUID] = changed[start : start + batch]
            ledger = await store.ledger(now - timedelta(days=_EVENT_HISTORY_DAYS), ids)
            read += ledger.size
            table = features_with(fit, ledger, today, build.horizon_days)
            if table.names != names:
                raise NoBuildError(
                    "the last build's features differ from the refresh's: run "
                    "`gateway scores build` again"
                )
            if churn is not None and churn.get("model") == "pareto_nbd":
                risk = bgnbd.churn_with(tuple(churn["params"]), ledger, today)
            elif churn is None and fit is not None:  # a build from before churn's fit
                risk = bgnbd.bgnbd_churn(fit, ledger, today)
            else:  # the build had no churn fit: it stored none, and so does a refresh
                risk = np.full(ledger.size, np.nan)
            records = records_of(
                ledger.keys,
                table,
                bounds,
                estimator,
                build.model_version,
                now,
                ledger.order_counts(today),
                risk,
            )
            written += await store.rescore(records)
            batches += 1
    return RefreshSummary(
        len(changed), read, written, batches, build.model_version, time.perf_counter() - started
    )
