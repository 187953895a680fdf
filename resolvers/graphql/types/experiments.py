"""Recommendation experiments and campaign metrics, as GraphQL.

``saveExperiment`` needs ``admin`` and is audited under the calling key; reading an
experiment's results or a send's metrics needs ``profiles:read`` (aggregates only, no
customer's data). ``Customer.experiments`` shows the customer's variant in the running
experiment. The counting and the statistics live in ``gateway.experiments``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, cast

import strawberry
from strawberry.types import Info

from gateway.access.api_keys import Scope
from gateway.experiments.campaigns import CampaignMetrics
from gateway.experiments.results import ExperimentResult, Metric, VariantResult
from gateway.privacy.audit import Action
from resolvers.graphql.access import require
from resolvers.graphql.context import Context
from resolvers.graphql.types.recommendations import send_id_argument

if TYPE_CHECKING:
    from resolvers.graphql.types.customer import Customer

GatewayInfo = Info[Context, None]
LazyCustomer = Annotated["Customer", strawberry.lazy("resolvers.graphql.types.customer")]


@strawberry.enum(description="How a variant's customers are served recommendations.")
class RecommendationStrategy(Enum):
    MODEL = "model"  # the model the last `recs build` selected (the default outside one)
    ITEM_TO_ITEM = "item_to_item"
    POPULARITY = "popularity"
    NONE = "none"


@strawberry.enum(description="The rate an experiment's intervals and test are about.")
class ExperimentMetric(Enum):
    CLICK_THROUGH = strawberry.enum_value("click_through", description="clicks / impressions.")
    CONVERSION = strawberry.enum_value(
        "conversion", description="Lists clicked, then ordered within the window / impressions."
    )
    ORDER = strawberry.enum_value(
        "order",
        description="Customers who ordered within the window after a list, clicked or not "
        "/ customers served: what a holdout (strategy NONE) is compared by; on the two "
        "metrics of clicks it is not compared.",
    )


@strawberry.input(description="One variant: the first one given is the control.")
class VariantInput:
    name: str
    strategy: RecommendationStrategy
    weight: float = strawberry.field(
        default=1.0, description="Relative share of customers (weights need not sum to 1)."
    )


@strawberry.type(description="A variant, and what its customers did with what was served.")
class ExperimentVariant:
    name: str
    strategy: RecommendationStrategy
    weight: float
    customers: int = strawberry.field(description="Distinct customers served a list.")
    impressions: int = strawberry.field(description="Lists served in the experiment's window.")
    clicks: int = strawberry.field(description="Lists with at least one attributed click.")
    ctr: float | None = strawberry.field(description="clicks / impressions.")
    conversions: int = strawberry.field(
        description="Lists clicked and followed by the customer's order within the window."
    )
    conversion_rate: float | None = strawberry.field(description="conversions / impressions.")
    orders: int = strawberry.field(
        description="Customers served a list who ordered within the window after one, "
        "clicked or not."
    )
    order_rate: float | None = strawberry.field(description="orders / customers.")
    ci_low: float = strawberry.field(description="Wilson 95 % interval of the metric's rate.")
    ci_high: float
    lift_vs_control: float | None = strawberry.field(
        description="The metric's rate / the reference's - 1: the control's, except on "
        "CLICK_THROUGH and CONVERSION when the control is a holdout (then the first variant "
        "served something). Null for the reference, and on those two for a holdout "
        "(compare it on ORDER)."
    )
    p_value: float | None = strawberry.field(
        description="Two-sided two-proportion z-test against the control."
    )


@strawberry.type(description="A recommendation experiment and its results so far.")
class Experiment:
    name: str
    start: datetime
    end: datetime
    running: bool
    metric: ExperimentMetric
    variants: list[ExperimentVariant]
    compared_variant: str | None = strawberry.field(
        description="The variant `liftVsControl` and `pValue` are about: the best one "
        "compared with the reference (with two variants, the treatment)."
    )
    lift_vs_control: float | None
    p_value: float | None

    @classmethod
    def of(cls, result: ExperimentResult) -> Experiment:
        found = result.experiment
        return cls(
            name=found.name,
            start=found.start,
            end=found.end,
            running=found.running(datetime.now(UTC)),
            metric=ExperimentMetric(result.metric),
            variants=[
                _variant(v, weight.weight, result.metric)
                for v, weight in zip(result.variants, found.variants, strict=True)
            ],
            compared_variant=result.compared,
            lift_vs_control=result.lift,
            p_value=result.p_value,
        )


def _variant(found: VariantResult, weight: float, metric: Metric) -> ExperimentVariant:
    judged = found.rate(metric)
    return ExperimentVariant(
        name=found.name,
        strategy=RecommendationStrategy(found.strategy),
        weight=weight,
        customers=found.customers,
        impressions=found.impressions,
        clicks=found.clicks,
        ctr=found.click_through.value,
        conversions=found.conversions,
        conversion_rate=found.conversion.value,
        orders=found.orders,
        order_rate=found.order.value,
        ci_low=judged.low,
        ci_high=judged.high,
        lift_vs_control=found.comparison.lift if found.comparison else None,
        p_value=found.comparison.p_value if found.comparison else None,
    )


@strawberry.type(description="One send's figures for the recipients in one RFM segment.")
class CampaignSegment:
    segment: str = strawberry.field(
        description="The RFM segment of the last score build; 'unscored' for recipients "
        "without scores."
    )
    delivered: int
    opened: int
    clicked: int
    converted: int
    unsubscribed: int
    open_rate: float | None = strawberry.field(description="opened / delivered.")
    click_through_rate: float | None = strawberry.field(description="clicked / delivered.")
    conversion_rate: float | None = strawberry.field(description="converted / delivered.")
    unsubscribe_rate: float | None = strawberry.field(description="unsubscribed / delivered.")


@strawberry.type(description="One send's figures, from the ESP events carrying its send_id.")
class Campaign:
    send_id: str
    delivered: int = strawberry.field(
        description="Recipients with a delivery, open, click, unsubscribe or spam report."
    )
    opened: int
    clicked: int
    converted: int = strawberry.field(
        description="Recipients who clicked and ordered within the conversion window."
    )
    unsubscribed: int
    open_rate: float | None = strawberry.field(description="opened / delivered.")
    click_through_rate: float | None = strawberry.field(description="clicked / delivered.")
    conversion_rate: float | None = strawberry.field(description="converted / delivered.")
    unsubscribe_rate: float | None = strawberry.field(description="unsubscribed / delivered.")

    @strawberry.field(description="The same figures per RFM segment of the recipients.")
    async def by_segment(self, info: GatewayInfo) -> list[CampaignSegment]:
        found = await info.context.services.campaigns.by_segment(self.send_id)
        return [CampaignSegment(segment=name, **_figures(f)) for name, f in found.items()]

    @classmethod
    def of(cls, found: CampaignMetrics) -> Campaign:
        return cls(send_id=found.send_id, **_figures(found))


def _figures(found: CampaignMetrics) -> dict[str, Any]:
    return {
        "delivered": found.delivered,
        "opened": found.opened,
        "clicked": found.clicked,
        "converted": found.converted,
        "unsubscribed": found.unsubscribed,
        "open_rate": found.open_rate,
        "click_through_rate": found.click_through_rate,
        "conversion_rate": found.conversion_rate,
        "unsubscribe_rate": found.unsubscribe_rate,
    }


@strawberry.type(description="The customer's variant in a running experiment.")
class CustomerExperiment:
    experiment: str
    variant: str
    strategy: RecommendationStrategy
    start: datetime
    end: datetime


async def customer_experiments(root: LazyCustomer, info: GatewayInfo) -> list[CustomerExperiment]:
    """The running experiment's variant for this customer (a hash: the same on every
    instance and every send); empty when none runs."""
    found = await info.context.services.experiments.assignment(root.profile.id)
    if found is None:
        return []
    return [
        CustomerExperiment(
            experiment=found.experiment.name,
            variant=found.variant.name,
            strategy=RecommendationStrategy(found.variant.strategy),
            start=found.experiment.start,
            end=found.experiment.end,
        )
    ]


@strawberry.type
class ExperimentQuery:
    @strawberry.field(description="An experiment and its results so far; null when unknown.")
    async def experiment(
        self,
        info: GatewayInfo,
        name: str,
        metric: ExperimentMetric = ExperimentMetric.CLICK_THROUGH,
    ) -> Experiment | None:
        require(info, Scope.PROFILES_READ)
        services = info.context.services
        found = await services.experiments.get(name)
        if found is None:
            return None
        chosen = cast(Metric, metric.value)
        return Experiment.of(await services.experiment_results.of(found, chosen))

    @strawberry.field(description="A send's delivery, open, click, conversion and unsubscribe.")
    async def campaign(self, info: GatewayInfo, send_id: str) -> Campaign:
        require(info, Scope.PROFILES_READ)
        checked = send_id_argument(send_id)
        assert checked is not None
        return Campaign.of(await info.context.services.campaigns.of_send(checked))


@strawberry.type
class ExperimentMutation:
    @strawberry.mutation(
        description="Save (or replace) an experiment: while it runs, each customer's "
        "recommendations use their variant's strategy. CONFLICT when another experiment "
        "runs in part of that time."
    )
    async def save_experiment(
        self,
        info: GatewayInfo,
        name: str,
        variants: list[VariantInput],
        start: datetime,
        end: datetime,
    ) -> Experiment:
        principal = require(info, Scope.ADMIN)
        services = info.context.services
        saved = await services.experiments.save(
            name, [(v.name, v.strategy.value, v.weight) for v in variants], start, end
        )
        services.audit.record_run(
            actor=principal.name,
            key_id=principal.key_id,
            action=Action.CHANGE,
            operation=f"mutation:saveExperiment:{saved.name}",
        )
        return Experiment.of(await services.experiment_results.of(saved))
