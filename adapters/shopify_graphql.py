"""Commerce: the Shopify GraphQL Admin API (``POST /admin/api/{version}/graphql.json``).

What REST needs one call per customer for, one query does here for a page of them:
``customers(first: n, query: "email:a OR email:b …")`` with each customer's
``orders(first: N, sortKey: CREATED_AT, reverse: true)``. Queries are built from a
small field tree that also prices them by Shopify's rules (scalar 0, object 1,
connection 2 + first x node), so a page is sized to stay under the single-query
maximum and its cost is taken from the shared ``CostBucket`` before it is sent: the
adapter waits for points rather than being answered ``THROTTLED``; if it is answered
so anyway (another client drew from the bucket), it waits for the reported restore
(or, with no cost reported, backs off) and asks again, within the call's deadline.
Products and inventory levels are read through the REST shape of the same shop
(``ShopifyAdapter``), on this adapter's client: one pool and one breaker per shop.

Shopify's GraphQL ids are gids (``gid://shopify/Customer/7300000000013``); records
keep the number, as the REST adapter does and as the gateway stores it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from adapters.transport.auth import build_auth
from adapters.transport.cost_bucket import CostBucket, ThrottleStatus
from adapters.transport.rest import RestClient
from adapters.transport.telemetry import NO_TELEMETRY, Quota, Telemetry

from . import shopify_queries as q
from .base import ClientBackedAdapter
from .config import ShopifyConfig
from .errors import (
    UpstreamAuthError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from .external_ids import ID_RULES, checked_id, email_problem
from .records import CommerceCustomer, InventoryLevel, Order, Product, normalise_email
from .shopify import ShopifyAdapter
from .shopify_queries import gid_number

__all__ = ["ShopifyGraphQLAdapter", "gid_number"]

_RULE = ID_RULES["shopify"]
_SINGLE_LINE_ITEMS = 10  # line items per order when one customer's orders are read
_MAX_FIRST = 250
# Line items per order when an order is re-read alone: one order (and its customer)
# within the 1,000-point single-query limit.
_MAX_LINE_ITEMS = 190


def _emails(emails: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(a for a in map(normalise_email, emails) if not email_problem(a)))


def _more(page: q.PageInfo | None) -> bool:
    return page is not None and page.hasNextPage


def _cut(orders: Sequence[q.Order], line_items: int) -> bool:
    """Whether an order of these has more line items than were read."""
    return bool(line_items) and any(o.lineItems and _more(o.lineItems.pageInfo) for o in orders)


# GraphQL error codes -> what they mean here (THROTTLED is waited for, not raised).
_ERRORS: Mapping[str, tuple[type[UpstreamError], str]] = {
    "ACCESS_DENIED": (UpstreamAuthError, "access denied"),
    "INTERNAL_SERVER_ERROR": (UpstreamUnavailable, "internal error"),
    "MAX_COST_EXCEEDED": (UpstreamBadResponse, "query over the single-query cost limit"),
}


class ShopifyGraphQLAdapter(ClientBackedAdapter[ShopifyConfig]):
    """``CommerceAdapter`` over the GraphQL Admin API, with a batch read of orders."""

    kind: Literal["commerce"] = "commerce"

    def __init__(
        self,
        config: ShopifyConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        redis: Any | None = None,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self.config = config
        auth = build_auth(config.name, config.auth)
        self.rest = RestClient(config, auth=auth, clock=clock, telemetry=telemetry, redis=redis)
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
        # Products and inventory over REST, through this adapter's client (one breaker).
        self._catalogue = ShopifyAdapter(config, clock=clock, rest=self.rest, telemetry=telemetry)
        self.throttled = 0  # THROTTLED answers met (each waited for and asked again)

    # Calls ------------------------------------------------------------------------
    async def _query(self, fields: Sequence[q.Field], variables: dict[str, Any]) -> q.Data:
        cost = q.query_cost(fields)
        declared = ", ".join(
            f"${name}: {'String' if name in ('q', 'after') else 'ID!'}" for name in variables
        )
        document = f"query({declared}) {{ {' '.join(f.render() for f in fields)} }}"
        operation = f"POST {self._route}"
        ends = time.monotonic() + self.config.deadline_s
        blind = 0  # THROTTLED answers in a row that said nothing of the bucket
        while True:
            token = secrets.token_hex(8)  # this attempt's cost, in flight until settled
            await self.bucket.take(cost, ends - time.monotonic(), token)
            try:
                reply = await self.rest.post(
                    self._route,
                    q.Reply,
                    json={"query": document, "variables": variables},
                    budget_s=ends - time.monotonic(),
                )
                if reply is None:
                    raise UpstreamBadResponse(self.name, f"{operation}: endpoint not found")
            except BaseException:
                # Whether the shop charged it is unknown: nothing is refunded, but the
                # query is no longer in flight (else its cost shrinks the bucket).
                await self.bucket.settle(0.0, None, token)
                raise
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
            if status is not None:
                self.rest.telemetry.quota(
                    self.name, Quota("points", status.available, status.maximum)
                )
            codes = [e.extensions.code if e.extensions else None for e in body.errors]
            if "THROTTLED" in codes:
                self.throttled += 1
                blind = 0 if status is not None else blind + 1
                await self._throttled(cost, status, blind, ends, token)
                continue  # the next take waits for the restore, or gives up in time
            actual = spent.actualQueryCost if spent and spent.actualQueryCost is not None else cost
            await self.bucket.settle(cost - actual, status, token)
            if codes:
                error, what = _ERRORS.get(codes[0] or "", (UpstreamBadResponse, "query refused"))
                raise error(self.name, f"{operation}: {what} ({codes[0] or 'no code'})")
            if body.data is None:
                raise UpstreamBadResponse(self.name, f"{operation}: answer without data")
            return body.data

    async def _throttled(
        self, cost: int, status: ThrottleStatus | None, blind: int, ends: float, token: str
    ) -> None:
        """After a THROTTLED answer (nothing was charged): the model learns the shop's
        level. An answer without ``extensions.cost`` (a proxy's, an older API's) still
        means the bucket held less than the cost: the model is emptied, so every caller
        waits for the cost to restore, and each such answer in a row doubles the wait
        (never a tight loop of refusals); a wait past the deadline fails at once."""
        if status is None:
            status = ThrottleStatus(self.bucket.maximum, 0.0, self.bucket.restore_rate)
        await self.bucket.settle(cost, status, token)
        if blind < 2:
            return
        # The bucket restores meanwhile: the next take then waits no more.
        extra = cost / self.bucket.restore_rate * 2 ** min(blind - 1, 10)
        if extra > ends - time.monotonic():
            raise UpstreamRateLimited(
                self.name,
                f"POST {self._route}: THROTTLED {blind} times without the bucket's state",
                retry_after_s=round(extra, 3),
                status_code=None,
            )
        await asyncio.sleep(extra)

    async def _search(self, terms: Sequence[str], node: tuple[q.Field, ...]) -> list[q.Customer]:
        """The customers matching any of ``terms`` (``email:…``, ``id:…``), as many per
        query as fit the shop's page and the single-query cost limit."""
        per_customer = 1 + q.query_cost(node)
        fit = max(1, (self.config.graphql.max_query_cost - 2) // per_customer)
        size = min(self.config.page_size, fit)
        found: list[q.Customer] = []
        for start in range(0, len(terms), size):
            page = terms[start : start + size]
            data = await self._query(
                [q.Field("customers", node, first=len(page), args="query: $q")],
                {"q": " OR ".join(page)},
            )
            found.extend(data.customers.nodes if data.customers else [])
        return found

    # The protocol -------------------------------------------------------------------
    async def find_customers_by_email(
        self, emails: Sequence[str]
    ) -> Mapping[str, CommerceCustomer]:
        wanted = _emails(emails)
        found: dict[str, CommerceCustomer] = {}
        for customer in await self._search([_email_term(e) for e in wanted], q.CUSTOMER):
            record = q.customer_record(self.name, customer)
            if record.email in wanted:  # a search may match more loosely than asked
                found[record.email] = record
        return found

    def batch_fits(self, first: int, line_items: bool) -> bool:
        """Whether one customer's ``first`` orders (with their line items) fit one query."""
        cost = 3 + q.query_cost(self._orders_node(first, line_items))
        return cost <= self.config.graphql.max_query_cost

    def _orders_node(self, first: int, line_items: bool) -> tuple[q.Field, ...]:
        lines = self.config.graphql.line_items_first if line_items else 0
        return (*q.scalars("id", "email"), q.with_page_info(q.orders(first, lines, full=False)))

    async def fetch_orders_by_email(
        self, emails: Sequence[str], first: int, line_items: bool = False
    ) -> Mapping[str, Sequence[Order]]:
        """Each found customer's ``first`` most recent orders (with all their line items
        when asked), keyed by normalised e-mail (no orders: an empty list): as many
        customers per query as the cost limit allows."""
        wanted = _emails(emails)
        found = await self._orders_of([_email_term(e) for e in wanted], first, line_items)
        return {
            email: orders
            for customer, orders in found
            if (email := normalise_email(customer.email or "")) in wanted
        }

    async def fetch_orders_by_ids(
        self, customer_ids: Sequence[str], first: int, line_items: bool = False
    ) -> Mapping[str, Sequence[Order]]:
        """``fetch_orders_by_email`` for customers known by their shop id (the number)."""
        wanted = list(dict.fromkeys(i for i in customer_ids if not _RULE.problem(i)))
        found = await self._orders_of([f"id:{i}" for i in wanted], first, line_items)
        return {
            number: orders
            for customer, orders in found
            if (number := gid_number(self.name, customer.id, "Customer")) in wanted
        }

    async def _orders_of(
        self, terms: Sequence[str], first: int, line_items: bool
    ) -> list[tuple[q.Customer, Sequence[Order]]]:
        if not terms:
            return []
        # One customer's whole read over the single-query limit: the batch brings the
        # cheapest window, and a customer with more orders than that is read alone.
        fits = self.batch_fits(first, line_items)
        node = self._orders_node(first if fits else min(first, self.orders_window), line_items)
        lines = self.config.graphql.line_items_first if line_items else 0
        found: dict[str, tuple[q.Customer, Sequence[Order]]] = {}
        alone: dict[str, q.Customer] = {}
        for customer in await self._search(terms, node):
            owner = gid_number(self.name, customer.id, "Customer")
            nodes = customer.orders.nodes if customer.orders else []
            more = not fits and customer.orders is not None and _more(customer.orders.pageInfo)
            if not more and not _cut(nodes, lines):
                found[owner] = (customer, [q.order_record(self.name, o, owner) for o in nodes])
            else:  # more orders, or an order with more line items, than the batch read
                alone[owner] = customer
        for owner, customer in alone.items():  # one at a time: each query may be near 1,000
            found[owner] = (customer, await self._alone(owner, first, lines))
        return list(found.values())

    async def fetch_orders(self, customer_id: str, first: int = 10) -> Sequence[Order]:
        checked_id(self.name, _RULE, customer_id)
        return await self._alone(customer_id, first, _SINGLE_LINE_ITEMS)

    async def _alone(self, customer_id: str, first: int, line_items: int) -> list[Order]:
        """One customer's orders in pages sized to the cost limit; an order with more line
        items than ``line_items`` has them all read (or the answer fails, never cut)."""
        orders, cut = await self._paged(customer_id, first, line_items)
        if cut and line_items < _MAX_LINE_ITEMS:
            orders, cut = await self._paged(customer_id, first, _MAX_LINE_ITEMS)
        if cut:
            raise UpstreamBadResponse(self.name, "an order has more line items than a query reads")
        return orders

    async def _paged(
        self, customer_id: str, first: int, line_items: int
    ) -> tuple[list[Order], bool]:
        orders: list[Order] = []
        cut = False
        per_order = 1 + q.query_cost(q.order_fields(line_items, full=True))
        size = max(1, min(_MAX_FIRST, (self.config.graphql.max_query_cost - 3) // per_order))
        variables: dict[str, Any] = {"id": f"gid://shopify/Customer/{customer_id}"}
        while len(orders) < first:
            want = min(size, first - len(orders))
            connection = q.orders(want, line_items, full=True, after="after" in variables)
            node = q.Field(
                "customer", (q.Field("id"), q.with_page_info(connection)), args="id: $id"
            )
            data = await self._query([node], variables)
            if data.customer is None or data.customer.orders is None:
                break
            found = data.customer.orders
            cut = cut or _cut(found.nodes, line_items)
            orders.extend(q.order_record(self.name, o, customer_id) for o in found.nodes)
            if not found.pageInfo or not found.pageInfo.hasNextPage:
                break
            variables["after"] = found.pageInfo.endCursor
        return orders[:first], cut

    async def fetch_products(self, ids: Sequence[str] | None = None) -> Sequence[Product]:
        return await self._catalogue.fetch_products(ids)

    async def fetch_inventory(
        self, inventory_item_ids: Sequence[str]
    ) -> Mapping[str, Sequence[InventoryLevel]]:
        return await self._catalogue.fetch_inventory(inventory_item_ids)


def _email_term(email: str) -> str:
    # Quoted: unquoted, Shopify's search reads ``*`` as a prefix wildcard (``a*b@x.com``
    # is a valid address) and may match others, crowding asked-for customers out of a
    # page. The e-mail rules already refuse ``"`` and ``\``, so nothing closes the quote.
    return f'email:"{email}"'
