"""bench/send's yardstick: the least a send must ask of each upstream, and how long that
takes at the upstream's published rate limit.

It is computed from the send (its customers and what its template reads), never from
what the gateway asked: a gateway that over-reads (50 orders with their line items for
a template that shows 3 orders' names) would otherwise raise its own yardstick and look
as close to the limit as a frugal one.

- HubSpot: a batch read of 100 ids per call; 100 calls per rolling 10 s.
- Shopify GraphQL: each customer's newest orders, only the fields the template shows,
  50 customers a query, priced by the sample shop's own cost rules (actual cost: a
  customer with fewer orders costs less); the plan's bucket and restore rate.
- Segment Profiles: no batch read, one events call per customer; 100 calls/s.

Each limit is a bucket or a window: its first bucketful (2,000 points, a window's 100
calls) is spent at once, the rest at the rate. The slowest upstream sets the limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from demo.people.population import Person
from demo.upstreams.shopify.cost import Plan
from demo.upstreams.shopify.graphql import ShopifyGraphQL

__all__ = ["Need", "least_asked", "seconds_at_limit"]

HUBSPOT_BATCH = 100
HUBSPOT = (100.0, 100 / 10)  # burst (a window's calls), calls per second
SEGMENT = (100.0, 100.0)
SHOP_PAGE = 50
# What the template reads of a customer's orders: its name and total.
_ORDERS = (
    "query($q: String) {{ customers(first: {page}, query: $q) {{ nodes {{ "
    "orders(first: {first}, sortKey: CREATED_AT, reverse: true) {{ nodes {{ "
    "name totalPriceSet {{ shopMoney {{ amount currencyCode }} }} }} }} }} }} }}"
)


@dataclass(frozen=True, slots=True)
class Need:
    """What a send needs of the upstreams at the least: calls, or the shop's points."""

    hubspot_calls: int
    shop_points: int
    segment_calls: int


def least_asked(people: Sequence[Person], orders: int) -> Need:
    """The least a send to ``people`` whose template shows their ``orders`` newest
    orders (name and total) asks of each upstream."""
    shop = ShopifyGraphQL(people, refusal=lambda _: None)
    points = 0
    for start in range(0, len(people), SHOP_PAGE):
        page = people[start : start + SHOP_PAGE]
        query = _ORDERS.format(page=len(page), first=orders)
        points += shop.actual_cost(query, {"q": " OR ".join(f"id:{p.shopify_id}" for p in page)})
    return Need(math.ceil(len(people) / HUBSPOT_BATCH), points, len(people))


def seconds_at_limit(need: Need, plan: Plan) -> dict[str, float]:
    """Seconds each upstream needs for ``need`` at its rate limit, after its burst."""

    def at(amount: float, burst: float, rate: float) -> float:
        return max(0.0, amount - burst) / rate

    return {
        "hubspot": at(need.hubspot_calls, *HUBSPOT),
        "shopify": at(need.shop_points, plan.maximum, plan.restore_rate),
        "segment": at(need.segment_calls, *SEGMENT),
    }
