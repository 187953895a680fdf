"""``Customer.recommendations``: in-stock products for this customer, each with a reason.

Thin: the consent rule and the ranking live in ``gateway.recommendations``; this
shapes the answer. A failing shop is an error on this field only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from adapters.errors import UpstreamError
from gateway.errors import InvalidInput
from gateway.privacy import consent
from gateway.privacy.consent import Purpose
from gateway.profiles.customers import CustomerProfile
from gateway.recommendations.serving import MAX_LIMIT, Picks, Recommendation, Recommender
from gateway.upstreams.federation import Outcome, SourceStatus
from resolvers.graphql.context import Context
from resolvers.graphql.loaders import per_request
from resolvers.graphql.types.federated import Money

if TYPE_CHECKING:
    from resolvers.graphql.types.customer import Customer

# resolvers.graphql.types.customer imports this module for the field resolver: the Customer type is
# lazy.
LazyCustomer = Annotated["Customer", strawberry.lazy("resolvers.graphql.types.customer")]


@strawberry.type(description="A product recommended to a customer; in stock when served.")
class RecommendedProduct:
    id: strawberry.ID = strawberry.field(description="The shop's product id.")
    title: str
    price: Money | None
    image_url: str | None
    url: str | None = strawberry.field(description="The product page in the storefront.")
    category: str | None
    score: float = strawberry.field(description="Higher is better; comparable within one list.")
    reason: str = strawberry.field(
        description='Why, for people: "because you bought X", "because you viewed X", '
        '"popular in Shoes", "trending". Never behaviour-based without personalisation consent.'
    )

    @classmethod
    def of(cls, found: Recommendation) -> RecommendedProduct:
        product = found.product
        return cls(
            id=strawberry.ID(product.external_id),
            title=product.title,
            price=Money.of(product.price),
            image_url=product.image_url,
            url=product.url,
            category=found.category,
            score=found.score,
            reason=found.reason,
        )


async def customer_recommendations(
    root: LazyCustomer,
    info: Info[Context, None],
    limit: int = 4,
    category: str | None = None,
    exclude_purchased: bool = True,
    max_per_category: Annotated[
        int | None,
        strawberry.argument(
            description="At most this many products of one category (0: no limit; default: "
            "the gateway's GATEWAY_RECS_MAX_PER_CATEGORY). Ignored with `category`."
        ),
    ] = None,
) -> list[RecommendedProduct]:
    """In-stock products from this customer's (and similar customers') views and purchases;
    popular ones without personalisation consent or history."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"'limit' must be between 1 and {MAX_LIMIT}", field="limit")
    if max_per_category is not None and not 0 <= max_per_category <= MAX_LIMIT:
        raise InvalidInput(
            f"'maxPerCategory' must be between 0 and {MAX_LIMIT}", field="maxPerCategory"
        )
    recommender = info.context.services.recommendations
    customer_id = root.profile.id
    found = await recommender.recommend(
        customer_id,
        limit=limit,
        category=category or None,
        exclude_purchased=exclude_purchased,
        # The same rule as every behavioural field: the customer's stored consent, and
        # the CRM's when this request read it.
        personalised=root.permits(Purpose.PERSONALISATION),
        max_per_category=max_per_category,
    )
    return [RecommendedProduct.of(r) for r in found]


def template_recommendations(
    info: Info[Context, None],
) -> DataLoader[CustomerProfile, Outcome[Picks]]:
    """The request's loader of template recommendations (made on first use)."""
    # One per request, so a renderBatch reads each customer's picks once.
    recommender = info.context.services.recommendations

    async def load(profiles: Sequence[CustomerProfile]) -> list[Outcome[Picks]]:
        return await _picks(recommender, profiles)

    return per_request(
        info.context.loaders,
        template_recommendations,
        lambda: DataLoader(load, cache_key_fn=lambda p: p.id),
    )


async def _picks(
    recommender: Recommender, profiles: Sequence[CustomerProfile]
) -> list[Outcome[Picks]]:
    """One batch of customers' picks; the stored consent decides what may be personalised
    (a render that also read the CRM narrows it further in its context)."""
    started = time.perf_counter()
    pairs = [(p.id, consent.granted(Purpose.PERSONALISATION, p.consents, None)) for p in profiles]
    now = datetime.now(UTC)
    try:
        found = await recommender.recommend_many(pairs)
    except UpstreamError as exc:
        failed = SourceStatus.FAILED
        ms = (time.perf_counter() - started) * 1000
        return [
            Outcome("recommendations", "commerce", None, exc, ms, now, failed) for _ in profiles
        ]
    ms = (time.perf_counter() - started) * 1000
    return [Outcome("recommendations", "commerce", found[p.id], None, ms, now) for p in profiles]
