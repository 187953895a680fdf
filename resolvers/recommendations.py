"""``Customer.recommendations``: in-stock products for this customer, each with a reason.

Thin: the consent rule and the ranking live in ``gateway.recommendations``; this
shapes the answer. A failing shop is an error on this field only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.types import Info

from gateway.consent import Purpose
from gateway.errors import InvalidInput
from gateway.recommendations.serving import MAX_LIMIT, Recommendation
from resolvers.context import Context
from resolvers.federated import Money

if TYPE_CHECKING:
    from resolvers.types import Customer

# resolvers.types imports this module for the field resolver: the Customer type is lazy.
LazyCustomer = Annotated["Customer", strawberry.lazy("resolvers.types")]


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
        description='Why, for people: "bought together with X", "viewed together with X", '
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
) -> list[RecommendedProduct]:
    """In-stock products from this customer's (and similar customers') views and purchases;
    popular ones without personalisation consent or history."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"'limit' must be between 1 and {MAX_LIMIT}", field="limit")
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
    )
    return [RecommendedProduct.of(r) for r in found]
