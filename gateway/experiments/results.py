"""An experiment's results, counted in SQL from what was stored, judged by
gateway/experiments/statistics.py.

Per variant, over the lists served under the experiment inside its window
(``recommendation_impressions``: experiment, variant, ``start <= served_at < end``):

- ``impressions``: lists served; ``customers``: distinct customers served one;
- ``clicks``: lists with at least one attributed click (``recommendation_clicks``) by
  the customer the list was served to;
  ``ctr`` = clicks / impressions;
- ``conversions``: lists with a click followed, within the conversion window, by an
  order of the clicking customer (an order event: Shopify ``orders/*`` or a stream's
  ``Order Completed``, at the order's time, stored never later than its arrival:
  gateway/experiments/order_times.py; ``clicked_at < order <= clicked_at + window``);
  ``conversionRate`` = conversions / impressions;
- ``orders``: lists followed within the window by an order of their customer, clicked
  or not (``served_at < order <= served_at + window``, counted as conversions are);
  ``orderRate`` = orders / impressions. What a holdout is measured by: it is served
  nothing, so it can have no click and, by the definition above, no conversion; against
  it only the orders placed at all tell whether recommending made people buy more.

Each rate has its Wilson interval; each variant is compared with the control (the first
variant) by a two-proportion z-test on the chosen metric. On a metric of clicks, a
variant served nothing (strategy ``none``), or any variant against such a control, is
not compared (no lift, no p-value): a rate held at zero by construction says nothing
of the recommendations, and its "significant" difference misled. The experiment's
headline lift and p-value are the best other compared variant's (with two variants: the
treatment's); no correction for comparing several.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, case, exists, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.recommendation_models import RecommendationClick, RecommendationImpression
from gateway.experiments.assignment import Experiment
from gateway.experiments.attribution import Attribution, clicks_of
from gateway.experiments.impressions import ImpressionLog
from gateway.experiments.order_times import ordered_after
from gateway.experiments.statistics import Comparison, Rate, compare, wilson

Metric = Literal["click_through", "conversion", "order"]
CLICK_METRICS = ("click_through", "conversion")  # counted from clicks: none in a holdout
HOLDOUT = "none"  # the strategy that serves nothing


@dataclass(frozen=True, slots=True)
class VariantResult:
    name: str
    strategy: str
    customers: int
    impressions: int
    click_through: Rate
    conversion: Rate
    order: Rate
    # Against the control on the chosen metric; None for the control itself, and on a
    # metric of clicks for a holdout or against one.
    comparison: Comparison | None

    @property
    def clicks(self) -> int:
        return self.click_through.successes

    @property
    def conversions(self) -> int:
        return self.conversion.successes

    @property
    def orders(self) -> int:
        return self.order.successes

    def rate(self, metric: Metric) -> Rate:
        return {"click_through": self.click_through, "conversion": self.conversion}.get(
            metric, self.order
        )


@dataclass(frozen=True, slots=True)
class ExperimentResult:
    experiment: Experiment
    metric: Metric
    variants: tuple[VariantResult, ...]
    # The headline: the best variant other than the control, against the control.
    compared: str | None
    lift: float | None
    p_value: float | None


def converted(clicks: Any, seconds: float, dialect: str) -> ColumnElement[bool]:
    """An order of the clicking customer first stored within ``seconds`` after the
    click (gateway/experiments/order_times.py)."""
    return ordered_after(clicks.customer_id, clicks.clicked_at, seconds, dialect)


class ExperimentResults:
    def __init__(
        self, engine: AsyncEngine, impressions: ImpressionLog, window_hours: float
    ) -> None:
        self._engine = engine
        self._impressions = impressions
        self.window_s = window_hours * 3600.0

    async def of(self, found: Experiment, metric: Metric = "click_through") -> ExperimentResult:
        """The results so far (this process's buffered impressions written first; other
        instances' within their flush interval, or their lull's longest delay)."""
        await self._impressions.flush()
        counts = await self._counts(found)
        variants: list[VariantResult] = []
        for variant in found.variants:
            impressions, customers, clicked, converted_, ordered = counts.get(
                variant.name, (0, 0, 0, 0, 0)
            )
            result = VariantResult(
                variant.name,
                variant.strategy,
                customers,
                impressions,
                wilson(clicked, impressions),
                wilson(converted_, impressions),
                wilson(ordered, impressions),
                None,
            )
            if variants and _comparable(variants[0], result, metric):
                comparison = compare(variants[0].rate(metric), result.rate(metric))
                result = dataclasses.replace(result, comparison=comparison)
            variants.append(result)
        best = max(
            (v for v in variants[1:] if v.comparison is not None),
            key=lambda v: -1.0 if (r := v.rate(metric).value) is None else r,
            default=None,
        )
        return ExperimentResult(
            found,
            metric,
            tuple(variants),
            best.name if best else None,
            best.comparison.lift if best and best.comparison else None,
            best.comparison.p_value if best and best.comparison else None,
        )

    async def clicks(self, customer_id: uuid.UUID) -> list[Attribution]:
        """A customer's attributed clicks, newest first."""
        await self._impressions.flush()
        return await clicks_of(self._engine, customer_id)

    async def _counts(self, found: Experiment) -> dict[str, tuple[int, int, int, int, int]]:
        shown, click = RecommendationImpression, RecommendationClick
        dialect = self._engine.dialect.name
        # The list's own customer's clicks only: a genuine link in another recipient's
        # event proves nothing of what this customer did.
        own = and_(click.list_id == shown.list_id, click.customer_id == shown.customer_id)
        clicked = exists().where(own)
        bought = exists().where(own, converted(click, self.window_s, dialect))
        ordered = ordered_after(shown.customer_id, shown.served_at, self.window_s, dialect)
        query = (
            select(
                shown.variant,
                func.count(),
                func.count(shown.customer_id.distinct()),
                func.sum(case((clicked, 1), else_=0)),
                func.sum(case((bought, 1), else_=0)),
                func.sum(case((ordered, 1), else_=0)),
            )
            .where(
                shown.experiment == found.name,
                shown.served_at >= found.start,
                shown.served_at < found.end,
            )
            .group_by(shown.variant)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return {
            str(variant): (int(n), int(people), int(c or 0), int(b or 0), int(o or 0))
            for variant, n, people, c, b, o in rows
            if variant is not None
        }


def _comparable(control: VariantResult, variant: VariantResult, metric: Metric) -> bool:
    """Whether ``variant`` is compared with ``control`` on ``metric``: on a metric of
    clicks, not when either is a holdout (its rate is zero by construction)."""
    return metric not in CLICK_METRICS or HOLDOUT not in (control.strategy, variant.strategy)
