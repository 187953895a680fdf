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
  gateway/experiments/order_times.py; ``clicked_at < order <= clicked_at + window``, and
  after the list was served);
  ``conversionRate`` = conversions / impressions;
- ``orders``: customers served a list who ordered within the window after one of their
  lists, clicked or not (``served_at < order <= served_at + window``, counted as
  conversions are); ``orderRate`` = orders / customers, its interval and test over
  customers (a customer served ten lists is one person who ordered, or did not). What a
  holdout is measured by: it is served nothing, so it can have no click and, by the
  definition above, no conversion; against it only whether people ordered at all tells
  whether recommending made them buy more.

Each rate has its Wilson interval; each variant is compared with the reference by a
two-proportion z-test on the chosen metric. The reference is the control (the first
variant), except on a metric of clicks: there a variant served nothing (strategy
``none``) is not compared (no lift, no p-value: a rate held at zero by construction
says nothing of the recommendations, and its "significant" difference misled), and
when the control is one, the first variant served something is the reference. The
experiment's headline lift and p-value are the best other compared variant's (with two
variants: the treatment's); no correction for comparing several.
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
    # Against the reference on the chosen metric (the control; on a metric of clicks the
    # first variant served something); None for the reference, and on a metric of
    # clicks for a holdout.
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
        return {
            "click_through": self.click_through,
            "conversion": self.conversion,
            "order": self.order,
        }[metric]


@dataclass(frozen=True, slots=True)
class ExperimentResult:
    experiment: Experiment
    metric: Metric
    variants: tuple[VariantResult, ...]
    # The headline: the best compared variant, against the reference.
    compared: str | None
    lift: float | None
    p_value: float | None


def converted(clicks: Any, shown: Any, seconds: float, dialect: str) -> ColumnElement[bool]:
    """An order of the clicking customer first stored within ``seconds`` after the click
    (gateway/experiments/order_times.py), and after the list was served: a click may be
    dated a little before its list (an ESP's clock behind, within attribution's
    ``CLOCK_SKEW``), and an order between the two was placed before anyone saw the list."""
    later = case((clicks.clicked_at > shown.served_at, clicks.clicked_at), else_=shown.served_at)
    return ordered_after(clicks.customer_id, later, seconds, dialect)


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
            variants.append(
                VariantResult(
                    variant.name,
                    variant.strategy,
                    customers,
                    impressions,
                    wilson(clicked, impressions),
                    wilson(converted_, impressions),
                    wilson(ordered, customers),
                    None,
                )
            )
        reference = _reference(variants, metric)
        if reference is not None:
            judged = reference.rate(metric)
            variants = [
                dataclasses.replace(v, comparison=compare(judged, v.rate(metric)))
                if v is not reference and _compared(v, metric)
                else v
                for v in variants
            ]
        best = max(
            (v for v in variants if v.comparison is not None),
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
        bought = exists().where(own, converted(click, shown, self.window_s, dialect))
        ordered = ordered_after(shown.customer_id, shown.served_at, self.window_s, dialect)
        query = (
            select(
                shown.variant,
                func.count(),
                func.count(shown.customer_id.distinct()),
                func.sum(case((clicked, 1), else_=0)),
                func.sum(case((bought, 1), else_=0)),
                func.count(case((ordered, shown.customer_id), else_=None).distinct()),
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


def _compared(variant: VariantResult, metric: Metric) -> bool:
    """Whether ``variant`` is compared on ``metric``: on a metric of clicks, not a
    holdout (its rate is zero by construction)."""
    return metric not in CLICK_METRICS or variant.strategy != HOLDOUT


def _reference(variants: list[VariantResult], metric: Metric) -> VariantResult | None:
    """What the others are compared with: the control, or on a metric of clicks the
    first variant served something (None when there is none)."""
    return next((v for v in variants if _compared(v, metric)), None)
