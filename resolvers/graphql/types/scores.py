"""``Customer.scores``: the traits and scores ``gateway scores build`` stored, read for a
whole batch of customers in one query (a DataLoader per request, shared with the
templates' ``customer.scores``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from gateway.privacy import consent
from gateway.profiles.customers import CustomerProfile
from gateway.scores.store import CustomerScores, ScoreStore
from gateway.upstreams.federation import Outcome
from resolvers.graphql.context import Context
from resolvers.graphql.loaders import per_request

if TYPE_CHECKING:
    from resolvers.graphql.types.customer import Customer

LazyCustomer = Annotated["Customer", strawberry.lazy("resolvers.graphql.types.customer")]


@strawberry.type(description="Computed traits and predictive scores (`gateway scores build`).")
class Scores:
    recency: int | None = strawberry.field(description="Days since the last order.")
    frequency: int = strawberry.field(description="Orders (one per day at most).")
    monetary: float = strawberry.field(description="Total spent over all orders.")
    average_order_value: float | None = strawberry.field(
        description="Total spent over the orders placed (several on one day each counted)."
    )
    days_between_orders: float | None
    rfm_segment: str | None = strawberry.field(
        description="The RFM grid's name: champions, loyal, potential_loyalists, new, "
        "promising, need_attention, about_to_sleep, at_risk, cant_lose_them, hibernating, "
        "lost; null without orders."
    )
    engagement_30d: int = strawberry.field(name="engagement30d")
    engagement_90d: int = strawberry.field(name="engagement90d")
    purchase_propensity: float | None = strawberry.field(
        description="Calibrated probability of an order in the model's horizon."
    )
    churn_risk: float | None = strawberry.field(
        description="Probability the customer has lapsed: no order in the next 90 days "
        "(Pareto/NBD); null without orders."
    )
    model_version: str
    computed_at: datetime

    @classmethod
    def of(cls, found: CustomerScores) -> Scores:
        return cls(
            recency=found.recency_days,
            frequency=found.frequency,
            monetary=found.monetary,
            average_order_value=found.average_order_value,
            days_between_orders=found.days_between_orders,
            rfm_segment=found.rfm_segment,
            engagement_30d=found.engagement_30d,
            engagement_90d=found.engagement_90d,
            purchase_propensity=found.purchase_propensity,
            churn_risk=found.churn_risk,
            model_version=found.model_version,
            computed_at=found.computed_at,
        )


def score_loader(info: Info[Context, None]) -> DataLoader[CustomerProfile, Outcome[CustomerScores]]:
    """The request's loader of stored scores (made on first use): one query per batch."""
    store = info.context.services.scores

    async def load(profiles: Sequence[CustomerProfile]) -> list[Outcome[CustomerScores]]:
        return await _scores(store, profiles)

    return per_request(
        info.context.loaders, score_loader, lambda: DataLoader(load, cache_key_fn=lambda p: p.id)
    )


async def _scores(
    store: ScoreStore, profiles: Sequence[CustomerProfile]
) -> list[Outcome[CustomerScores]]:
    started = time.perf_counter()
    found = await store.scores_for([p.id for p in profiles])
    ms = (time.perf_counter() - started) * 1000
    now = datetime.now(UTC)
    # Scores are derived from orders: the commerce kind, as far as freshness goes.
    return [Outcome("scores", "commerce", found.get(p.id), None, ms, now) for p in profiles]


async def customer_scores(root: LazyCustomer, info: Info[Context, None]) -> Scores | None:
    """Null until `gateway scores build` has scored this customer."""
    outcome = await score_loader(info).load(root.profile)
    if outcome.value is None:
        return None
    if not root.permits(consent.Purpose.PERSONALISATION):
        return Scores.of(outcome.value.without_behaviour())
    return Scores.of(outcome.value)
