"""Commerce: the Shopify GraphQL Admin API (``POST /admin/api/{version}/graphql.json``).

What REST needs one call per customer for, one query does here for a page of them:
``customers(first: n, query: "email:a OR email:b …")`` with each customer's
``orders(first: N, sortKey: CREATED_AT, reverse: true)``. Queries are built from a
small field tree that also prices them by Shopify's rules (scalar 0, object 1,
connection 2 + first x node), so a page is sized to stay under the single-query
maximum and its cost is taken from the shared ``CostBucket`` before it is sent: the
adapter waits for points rather than being answered ``THROTTLED``; if it is answered
so anyway (another client drew from the bucket), it waits for the reported restore
and asks again, within the call's deadline. Products and inventory levels are read
through the REST shape of the same shop (``ShopifyAdapter``).

Shopify's GraphQL ids are gids (``gid://shopify/Customer/7300000000013``); records
keep the number, as the REST adapter does and as the gateway stores it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from adapters.transport.auth import build_auth
from adapters.transport.cost_bucket import CostBucket, ThrottleStatus
from adapters.transport.rest import RestClient

from . import shopify_queries as q
from .base import ClientBackedAdapter
from .config import ShopifyConfig
from .errors import UpstreamAuthError, UpstreamBadResponse, UpstreamError, UpstreamUnavailable
from .external_ids import ID_RULES, checked_id, email_problem
from .payload import checked
from .records import (
    CommerceCustomer,
    InventoryLevel,
    LineItem,
    Money,
    Order,
    Product,
    normalise_email,
)
from .shopify import ShopifyAdapter

__all__ = ["ShopifyGraphQLAdapter", "gid_number"]

_RULE = ID_RULES["shopify"]
_SINGLE_LINE_ITEMS = 10  # line items per order when one customer's orders are read
_MAX_FIRST = 250


# GraphQL error codes -> what they mean here (THROTTLED is waited for, not raised).
_ERRORS: Mapping[str, tuple[type[UpstreamError], str]] = {
    "ACCESS_DENIED": (UpstreamAuthError, "access denied"),
    "INTERNAL_SERVER_ERROR": (UpstreamUnavailable, "internal error"),
    "MAX_COST_EXCEEDED": (UpstreamBadResponse, "query over the single-query cost limit"),
}


def gid_number(upstream: str, value: str, kind: str) -> str:
    """The number of ``gid://shopify/<kind>/<number>``; anything else is a bad answer."""
    number = value.removeprefix(f"gid://shopify/{kind}/")
    if number == value or _RULE.problem(number):
        raise UpstreamBadResponse(upstream, f"{kind} id is not a Shopify gid")
    return number


class ShopifyGraphQLAdapter(ClientBackedAdapter[ShopifyConfig]):
    """``CommerceAdapter`` over the GraphQL Admin API, with a batch read of orders."""

    kind: Literal["commerce"] = "commerce"

    def __init__(
        self,
        config: ShopifyConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        redis: Any | None = None,
    ) -> None:
        self.config = config
        self.rest = RestClient(config, auth=build_auth(config.name, config.auth), clock=clock)
        self._client = self.rest
        self._route = f"/admin/api/{config.api_version}/graphql.json"
        tuning = config.graphql
        self.bucket = CostBucket(
            config.name,
            tuning.bucket_size,
            tuning.restore_rate,
            redis=redis,
            key=f"gateway:v1:cost-bucket:{config.name}:{config.base}",
        )
        self.orders_window = tuning.orders_first
        self._catalogue = ShopifyAdapter(config, clock=clock)
        self.throttled = 0  # THROTTLED answers met (each waited for and asked again)

    async def aclose(self) -> None:
        await self.rest.aclose()
        await self._catalogue.aclose()

    # Calls ------------------------------------------------------------------------
    async def _query(self, fields: Sequence[q.Field], variables: dict[str, Any]) -> q.Data:
        cost = q.query_cost(fields)
        declared = ", ".join(
            f"${name}: {'String' if name in ('q', 'after') else 'ID!'}" for name in variables
        )
        document = f"query({declared}) {{ {' '.join(f.render() for f in fields)} }}"
        operation = f"POST {self._route}"
        ends = time.monotonic() + self.config.deadline_s
        while True:
            await self.bucket.take(cost, ends - time.monotonic())
            reply = await self.rest.post(
                self._route,
                q.Reply,
                json={"query": document, "variables": variables},
                budget_s=ends - time.monotonic(),
            )
            if reply is None:
                raise UpstreamBadResponse(self.name, f"{operation}: endpoint not found")
            body = reply.body
            spent = body.extensions.cost if body.extensions else None
            status = (
                ThrottleStatus(
                    spent.throttleStatus.maximumAvailable,
                    spent.throttleStatus.currentlyAvailable,
                    spent.throttleStatus.restoreRate,
                )
                if spent
                else None
            )
            codes = [e.extensions.code if e.extensions else None for e in body.errors]
            if "THROTTLED" in codes:
                self.throttled += 1
                await self.bucket.settle(cost, status)  # nothing was charged
                continue  # the next take waits for the restore, or gives up in time
            actual = spent.actualQueryCost if spent and spent.actualQueryCost is not None else cost
            await self.bucket.settle(cost - actual, status)
            if codes:
                error, what = _ERRORS.get(codes[0] or "", (UpstreamBadResponse, "query refused"))
                raise error(self.name, f"{operation}: {what} ({codes[0] or 'no code'})")
            if body.data is None:
                raise UpstreamBadResponse(self.name, f"{operation}: answer without data")
            return body.data

    def _pages(self, emails: Sequence[str], per_customer: int) -> list[list[str]]:
        wanted = list(
            dict.fromkeys(a for a in map(normalise_email, emails) if not email_problem(a))
        )
        fit = max(1, (self.config.graphql.max_query_cost - 2) // per_customer)
        size = min(self.config.page_size, fit)
        return [wanted[start : start + size] for start in range(0, len(wanted), size)]

    async def _customers(
        self, emails: Sequence[str], node: tuple[q.Field, ...]
    ) -> list[tuple[list[str], q.Customer]]:
        found = []
        for page in self._pages(emails, 1 + q.query_cost(node)):
            search = " OR ".join(f"email:{email}" for email in page)
            data = await self._query(
                [q.Field("customers", node, first=len(page), args="query: $q")], {"q": search}
            )
            for customer in data.customers.nodes if data.customers else []:
                found.append((page, customer))
        return found

    # The protocol -------------------------------------------------------------------
    async def find_customers_by_email(
        self, emails: Sequence[str]
    ) -> Mapping[str, CommerceCustomer]:
        found: dict[str, CommerceCustomer] = {}
        for page, customer in await self._customers(emails, q.CUSTOMER):
            record = self._customer(customer)
            if record.email in page:  # a search may match more loosely than asked
                found[record.email] = record
        return found

    async def fetch_orders_by_email(
        self, emails: Sequence[str], first: int
    ) -> Mapping[str, Sequence[Order]]:
        """Each found customer's ``first`` most recent orders, keyed by normalised e-mail
        (a customer without orders maps to an empty list): one query per page."""
        tuning = self.config.graphql
        node = (*q.scalars("id", "email"), q.orders(first, tuning.line_items_first, full=False))
        found: dict[str, Sequence[Order]] = {}
        for page, customer in await self._customers(emails, node):
            email = normalise_email(customer.email or "")
            if email in page:
                owner = gid_number(self.name, customer.id, "Customer")
                orders = customer.orders.nodes if customer.orders else []
                found[email] = [self._order(o, owner) for o in orders]
        return found

    async def fetch_orders(self, customer_id: str, first: int = 10) -> Sequence[Order]:
        checked_id(self.name, _RULE, customer_id)
        orders: list[Order] = []
        per_order = 1 + q.query_cost(q.order_fields(_SINGLE_LINE_ITEMS, full=True))
        size = max(1, min(_MAX_FIRST, (self.config.graphql.max_query_cost - 3) // per_order))
        variables: dict[str, Any] = {"id": f"gid://shopify/Customer/{customer_id}"}
        while len(orders) < first:
            want = min(size, first - len(orders))
            connection = q.orders(want, _SINGLE_LINE_ITEMS, full=True, after="after" in variables)
            node = q.Field(
                "customer", (q.Field("id"), q.with_page_info(connection)), args="id: $id"
            )
            data = await self._query([node], variables)
            if data.customer is None or data.customer.orders is None:
                break
            found = data.customer.orders
            orders.extend(self._order(o, customer_id) for o in found.nodes)
            if not found.pageInfo or not found.pageInfo.hasNextPage:
                break
            variables["after"] = found.pageInfo.endCursor
        return orders[:first]

    async def fetch_products(self, ids: Sequence[str] | None = None) -> Sequence[Product]:
        return await self._catalogue.fetch_products(ids)

    async def fetch_inventory(
        self, inventory_item_ids: Sequence[str]
    ) -> Mapping[str, Sequence[InventoryLevel]]:
        return await self._catalogue.fetch_inventory(inventory_item_ids)

    # Payload -> record ----------------------------------------------------------------
    def _customer(self, c: q.Customer) -> CommerceCustomer:
        consent = c.emailMarketingConsent
        spent = c.amountSpent
        if spent is None or c.numberOfOrders is None or not c.numberOfOrders.isdigit():
            raise UpstreamBadResponse(self.name, "customer: amountSpent or numberOfOrders missing")
        last = c.lastOrder
        with checked(self.name, "customer"):
            return CommerceCustomer(
                source=self.name,
                external_id=gid_number(self.name, c.id, "Customer"),
                email=c.email,
                first_name=c.firstName,
                last_name=c.lastName,
                phone=c.phone,
                orders_count=int(c.numberOfOrders),
                total_spent=Money(amount=spent.amount, currency=spent.currencyCode),
                last_order_id=gid_number(self.name, last.id, "Order") if last else None,
                last_order_name=last.name if last else None,
                state=c.state.lower() if c.state else None,
                verified_email=c.verifiedEmail,
                tags=tuple(c.tags),
                email_marketing_consent=None
                if consent is None
                else consent.marketingState == "SUBSCRIBED",
                created_at=c.createdAt,
                updated_at=c.updatedAt,
            )

    def _order(self, o: q.Order, customer_id: str) -> Order:
        def money(bag: q.Bag | None) -> Money | None:
            return (
                None
                if bag is None
                else Money(amount=bag.shopMoney.amount, currency=bag.shopMoney.currencyCode)
            )

        fulfilment = (o.displayFulfillmentStatus or "").lower()
        items = o.lineItems.nodes if o.lineItems else []
        with checked(self.name, "order"):
            return Order(
                source=self.name,
                external_id=gid_number(self.name, o.id, "Order"),
                name=o.name,
                customer_id=customer_id,
                email=o.email,
                created_at=o.createdAt,
                processed_at=o.processedAt,
                financial_status=o.displayFinancialStatus.lower()
                if o.displayFinancialStatus
                else None,
                fulfillment_status=None if fulfilment in ("", "unfulfilled") else fulfilment,
                total_price=Money(
                    amount=o.totalPriceSet.shopMoney.amount,
                    currency=o.totalPriceSet.shopMoney.currencyCode,
                ),
                subtotal_price=money(o.subtotalPriceSet),
                total_tax=money(o.totalTaxSet),
                line_items=tuple(
                    LineItem(
                        external_id=gid_number(self.name, item.id, "LineItem"),
                        product_id=gid_number(self.name, item.product.id, "Product")
                        if item.product
                        else None,
                        variant_id=gid_number(self.name, item.variant.id, "ProductVariant")
                        if item.variant
                        else None,
                        title=item.title,
                        quantity=item.quantity,
                        price=Money(
                            amount=item.originalUnitPriceSet.shopMoney.amount,
                            currency=item.originalUnitPriceSet.shopMoney.currencyCode,
                        ),
                        sku=item.sku,
                    )
                    for item in items
                ),
            )
