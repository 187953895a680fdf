"""``Customer.recommendations``: in-stock products for this customer, each with a reason.

Thin: the consent rule and the ranking live in ``gateway.recommendations``, the
experiment's strategy, the tracked links and the impression in ``gateway.experiments``;
this shapes the answer. A failing shop is an error on this field only.
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
from gateway.experiments.served import ServedRecommendations
from gateway.privacy import consent
from gateway.privacy.consent import Purpose
from gateway.profiles.customers import CustomerProfile
from gateway.recommendations.serving import MAX_LIMIT, Picks, Recommendation
from gateway.upstreams.federation import Outcome, SourceStatus
from resolvers.graphql.context import Context
from resolvers.graphql.loaders import per_request
from resolvers.graphql.types.federated import Money

if TYPE_CHECKING:
    from resolvers.graphql.types.customer import Customer

# resolvers.graphql.types.customer imports this module for the field resolver: the Customer type is
# lazy.
LazyCustomer = Annotated["Customer", strawberry.lazy("resolvers.graphql.types.customer")]
MAX_SEND_ID = 255


@strawberry.type(description="A product recommended to a customer; in stock when served.")
class RecommendedProduct:
    id: strawberry.ID = strawberry.field(description="The shop's product id.")
    title: str
    price: Money | None
    image_url: str | None
    url: str | None = strawberry.field(
        description="The product page in the storefront, with the tracking parameter "
        "(`gw_rec`) that attributes a click on it to this list."
    )
    category: str | None
    score: float = strawberry.field(description="Higher is better; comparable within one list.")
    reason: str = strawberry.field(
        description='Why, for people: "because you bought X", "because you viewed X", '
        '"popular in Shoes", "trending". Never behaviour-based without personalisation consent.'
    )
    list_id: strawberry.ID | None = strawberry.field(
        description="The served list's id (the same for every item of one answer); null "
        "when the gateway records no impressions (GATEWAY_RECS_IMPRESSIONS=false)."
    )

    @classmethod
    def of(cls, found: Recommendation, list_id: str | None, link: str | None) -> RecommendedProduct:
        """``found`` as served in ``list_id`` (None: untracked), with ``link``."""
        product = found.product
        return cls(
            id=strawberry.ID(product.external_id),
            title=product.title,
            price=Money.of(product.price),
            image_url=product.image_url,
            url=link,
            category=found.category,
            score=found.score,
            reason=found.reason,
            list_id=strawberry.ID(list_id) if list_id else None,
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
    send_id: Annotated[
        str | None,
        strawberry.argument(
            description="The send this list is for, recorded with it (clicks are attributed "
            "to it too when the ESP's events carry no `send_id` custom argument)."
        ),
    ] = None,
) -> list[RecommendedProduct]:
    """In-stock products from this customer's (and similar customers') views and purchases;
    popular ones without personalisation consent or history. In a running experiment, the
    customer's variant's strategy (none for a holdout: an empty list)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"'limit' must be between 1 and {MAX_LIMIT}", field="limit")
    if max_per_category is not None and not 0 <= max_per_category <= MAX_LIMIT:
        raise InvalidInput(
            f"'maxPerCategory' must be between 0 and {MAX_LIMIT}", field="maxPerCategory"
        )
    served = await info.context.services.served.for_customer(
        root.profile.id,
        surface="graphql",
        send_id=send_id_argument(send_id),
        limit=limit,
        category=category or None,
        exclude_purchased=exclude_purchased,
        # The same rule as every behavioural field: the customer's stored consent, and
        # the CRM's when this request read it.
        personalised=root.permits(Purpose.PERSONALISATION),
        max_per_category=max_per_category,
    )
    return [
        RecommendedProduct.of(r, served.list_id, link)
        for r, link in zip(served.items, served.links, strict=True)
    ]


def send_id_argument(send_id: str | None, field: str = "sendId") -> str | None:
    """A caller's send id, checked: 1 to 255 characters, or none."""
    if send_id is None:
        return None
    if not 1 <= len(send_id) <= MAX_SEND_ID or not send_id.isprintable():
        raise InvalidInput(f"'{field}' is 1 to {MAX_SEND_ID} printable characters", field=field)
    return send_id


def template_recommendations(
    info: Info[Context, None], send_id: str | None = None
) -> DataLoader[CustomerProfile, Outcome[Picks]]:
    """The request's loader of template recommendations for this send (made on first use)."""
    # One per request and send, so a renderBatch reads each customer's picks once.
    served = info.context.services.served

    async def load(profiles: Sequence[CustomerProfile]) -> list[Outcome[Picks]]:
        return await _picks(served, profiles, send_id)

    return per_request(
        info.context.loaders,
        (template_recommendations, send_id),
        lambda: DataLoader(load, cache_key_fn=lambda p: p.id),
    )


async def _picks(
    served: ServedRecommendations, profiles: Sequence[CustomerProfile], send_id: str | None
) -> list[Outcome[Picks]]:
    """One batch of customers' picks; the stored consent decides what may be personalised
    (a render that also read the CRM narrows it further in its context)."""
    started = time.perf_counter()
    pairs = [(p.id, consent.granted(Purpose.PERSONALISATION, p.consents, None)) for p in profiles]
    now = datetime.now(UTC)
    try:
        found = await served.for_templates(pairs, send_id)
    except UpstreamError as exc:
        failed = SourceStatus.FAILED
        ms = (time.perf_counter() - started) * 1000
        return [
            Outcome("recommendations", "commerce", None, exc, ms, now, failed) for _ in profiles
        ]
    ms = (time.perf_counter() - started) * 1000
    return [Outcome("recommendations", "commerce", found[p.id], None, ms, now) for p in profiles]
