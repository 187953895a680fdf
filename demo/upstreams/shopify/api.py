"""Sample Shopify Admin REST API 2024-10: customers, orders, products, inventory
(and, from ``graphql.py``, the GraphQL Admin API at ``graphql.json``).

Paginates like Shopify: a ``Link`` header with opaque ``page_info`` cursors that
carry the original filters (a follow-up request sends only ``limit`` and
``page_info``). Every answer reports the leaky-bucket level in
``X-Shopify-Shop-Api-Call-Limit``; the bucket is only reported, never enforced:
throttling comes from the ``rate_limit_next`` knob, so tests decide when it happens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from demo.people.catalogue import LOCATION_ID, catalogue
from demo.people.orders import Order, find_order, orders_for
from demo.people.population import Person
from demo.upstreams.credentials import SampleCredentials
from demo.upstreams.faults import Decision
from demo.upstreams.paging import bounded_int, decode_cursor, encode_cursor
from demo.upstreams.service import SampleService, json_body, json_response, same_secret
from demo.upstreams.shopify import records
from demo.upstreams.shopify.cost import PLANS, Bucket, Plan
from demo.upstreams.shopify.filters import (
    FilterError,
    customer_matches,
    order_matches,
    product_matches,
    search_customers,
)
from demo.upstreams.shopify.graphql import ShopifyGraphQL

API = "/admin/api/2024-10"
BUCKET_SIZE = 40
LEAK_PER_S = 2.0
MAX_LIMIT = 250
_UNAUTHORIZED = "[API] Invalid API key or access token (unrecognized login or wrong password)"
_THROTTLED = (
    "Exceeded 2 calls per second for api client. "
    "Reduce request rates to resume uninterrupted service."
)


class _Bucket:
    """Shopify's leaky bucket, as reported in the call-limit header."""

    def __init__(self) -> None:
        self.level, self.at = 0.0, time.monotonic()

    def fill(self, size: int = BUCKET_SIZE) -> int:
        now = time.monotonic()
        self.level = min(size - 1, max(0.0, self.level - (now - self.at) * LEAK_PER_S) + 1)
        self.at = now
        return max(1, round(self.level))


class ShopifySample(SampleService):
    """The sample shop's Admin REST API over the sample population."""

    name = "shopify"

    def __init__(
        self,
        people: Sequence[Person],
        credentials: SampleCredentials | None = None,
        *,
        seed: int = 0,
        plan: str = "plus",
    ) -> None:
        self.credentials = credentials or SampleCredentials()
        # The GraphQL Admin API beside the REST one, over the same people, with its
        # cost-based bucket (``plan``: "plus" or "standard").
        self.graphql = ShopifyGraphQL(people, self._refusal, Bucket(PLANS[plan]))
        self._by_email = {p.email.lower(): p for p in people}
        self._by_shopify_id = {p.shopify_id: p for p in people}
        self._bucket = _Bucket()
        self._stock_lock = threading.Lock()
        # Dated from the people's anchor, which a caller may have fixed (not today's).
        self._catalogue = catalogue(people[0].epoch if people else None)
        self._stock = {
            p.inventory_item_id: (p.initial_stock, p.updated_at) for p in self._catalogue.products
        }
        super().__init__(people, seed=seed)

    def routes(self) -> list[BaseRoute]:
        return [
            Route(f"{API}/customers/search.json", self._search_customers, methods=["GET"]),
            Route(f"{API}/customers.json", self._customers, methods=["GET"]),
            Route(f"{API}/customers/{{id}}.json", self._customer, methods=["GET"]),
            Route(f"{API}/customers/{{id}}/orders.json", self._customer_orders, methods=["GET"]),
            Route(f"{API}/orders.json", self._orders, methods=["GET"]),
            Route(f"{API}/products.json", self._products, methods=["GET"]),
            Route(f"{API}/products/{{id}}.json", self._product, methods=["GET"]),
            Route(f"{API}/inventory_levels.json", self._inventory_levels, methods=["GET"]),
            Route(f"{API}/graphql.json", self.graphql.endpoint, methods=["POST"]),
        ]

    def control_routes(self) -> list[BaseRoute]:
        return [
            Route("/_sample/inventory/{inventory_item_id}", self._set_inventory, methods=["PUT"]),
            Route("/_sample/graphql", self._graphql_state, methods=["GET", "PUT"]),
        ]

    def rate_limited_response(self, retry_after_s: float) -> Response:
        return json_response(
            {"errors": _THROTTLED}, 429, {"Retry-After": f"{float(retry_after_s):.1f}"}
        )

    def error_response(self, status: int) -> Response:
        return json_response(
            {"errors": "Service Unavailable" if status == 503 else "Internal Server Error"}, status
        )

    def not_found_response(self) -> Response:
        return json_response({"errors": "Not Found"}, 404)

    def fault_headers(self, decision: Decision) -> list[tuple[str, str]]:
        # The quota_limit knob shrinks the bucket, as a smaller plan would.
        size = self.faults.settings.quota_limit or BUCKET_SIZE
        level = size if decision.rate_limited else self._bucket.fill(size)
        return [("X-Shopify-Shop-Api-Call-Limit", f"{level}/{size}")]

    # Inventory ----------------------------------------------------------------
    def available(self, inventory_item_id: int) -> int:
        return self._stock[inventory_item_id][0]

    def set_inventory(self, inventory_item_id: int, available: int) -> None:
        """Set one item's stock (what ``PUT /_sample/inventory/{id}`` does)."""
        if inventory_item_id not in self._stock:
            raise KeyError(inventory_item_id)
        with self._stock_lock:
            self._stock[inventory_item_id] = (available, datetime.now(UTC))

    async def _graphql_state(self, request: Request) -> Response:
        """The GraphQL bucket's plan and what it counted; ``PUT {"plan": "standard"}``
        (or ``{"maximum": 100, "restore_rate": 5}``, a shrunk quota) refills it on that
        plan and clears the counts."""
        if request.method == "PUT":
            try:
                body = await json_body(request)
                if "plan" in body:
                    plan = PLANS[body["plan"]]
                else:
                    plan = Plan(float(body["maximum"]), float(body["restore_rate"]))
                    if plan.maximum <= 0 or plan.restore_rate <= 0:
                        raise ValueError("a plan's maximum and restore rate are positive")
                self.graphql.reset(plan)
            except (ValueError, KeyError, TypeError):
                problem = f"one of {sorted(PLANS)}, or a maximum and a restore_rate"
                return json_response({"errors": {"plan": [problem]}}, 422)
        named = next((n for n, p in PLANS.items() if p == self.graphql.bucket.plan), "custom")
        return json_response(
            {
                "plan": named,
                "throttled": self.graphql.throttled,
                "points_spent": self.graphql.points_spent,
                "throttleStatus": self.graphql.bucket.status(),
            }
        )

    async def _set_inventory(self, request: Request) -> Response:
        try:
            item_id = int(request.path_params["inventory_item_id"])
            body = await json_body(request)
            available = body["available"]
            if isinstance(available, bool) or not isinstance(available, int):
                raise TypeError("available must be an integer")
            self.set_inventory(item_id, available)
        except KeyError:
            return self.not_found_response()
        except (ValueError, TypeError) as exc:
            return json_response({"errors": {"available": [str(exc)]}}, 422)
        level, updated = self._stock[item_id]
        return json_response(
            {"inventory_level": records.inventory_level(item_id, LOCATION_ID, level, updated)}
        )

    # Plumbing -----------------------------------------------------------------
    def _refusal(self, request: Request) -> Response | None:
        if same_secret(
            request.headers.get("x-shopify-access-token"), self.credentials.shopify_token
        ):
            return None
        return json_response({"errors": _UNAUTHORIZED}, 401)

    def _listing(
        self,
        request: Request,
        key: str,
        build: Callable[[Mapping[str, str]], Sequence[Any]],
        render: Callable[[Any], dict[str, Any]],
    ) -> Response:
        """One page of ``build(filters)``, with the Link header Shopify sends."""
        if (refusal := self._refusal(request)) is not None:
            return refusal
        params = request.query_params
        limit = bounded_int(params.get("limit"), 50, MAX_LIMIT)
        if limit is None:
            return json_response({"errors": {"limit": [f"must be 1..{MAX_LIMIT}"]}}, 400)
        offset, filters = 0, {k: v for k, v in params.items() if k not in ("limit", "page_info")}
        if "page_info" in params:
            state = decode_cursor(params["page_info"])
            if state is None or not isinstance(state.get("o"), int):
                return json_response({"errors": {"page_info": ["Invalid value."]}}, 400)
            offset, filters = state["o"], state["q"]
        try:
            items = build(filters)
        except FilterError as exc:
            return json_response({"errors": {exc.field: [str(exc)]}}, 400)
        fields = [f for f in filters.get("fields", "").split(",") if f]
        page = [render(item) for item in items[offset : offset + limit]]
        if fields:
            page = [{k: v for k, v in item.items() if k in fields} for item in page]
        links = []
        if offset > 0:
            links.append(self._link(request, limit, filters, max(0, offset - limit), "previous"))
        if offset + limit < len(items):
            links.append(self._link(request, limit, filters, offset + limit, "next"))
        return json_response({key: page}, headers={"Link": ", ".join(links)} if links else None)

    @staticmethod
    def _link(
        request: Request, limit: int, filters: Mapping[str, str], offset: int, rel: str
    ) -> str:
        token = encode_cursor({"q": dict(filters), "o": offset})
        url = request.url.replace(query=urlencode({"limit": limit, "page_info": token}))
        return f'<{url}>; rel="{rel}"'

    def _person(self, raw_id: str) -> Person | None:
        try:
            return self._by_shopify_id.get(int(raw_id))
        except ValueError:
            return None

    # Customers ----------------------------------------------------------------
    async def _search_customers(self, request: Request) -> Response:
        return self._listing(
            request,
            "customers",
            lambda f: search_customers(self.people, self._by_email, f.get("query", "")),
            records.customer,
        )

    async def _customers(self, request: Request) -> Response:
        def build(filters: Mapping[str, str]) -> list[Person]:
            return [p for p in self.people if customer_matches(p, filters)]

        return self._listing(request, "customers", build, records.customer)

    async def _customer(self, request: Request) -> Response:
        if (refusal := self._refusal(request)) is not None:
            return refusal
        person = self._person(request.path_params["id"])
        if person is None:
            return self.not_found_response()
        return json_response({"customer": records.customer(person)})

    # Orders -------------------------------------------------------------------
    async def _customer_orders(self, request: Request) -> Response:
        person = self._person(request.path_params["id"])
        if person is None and self._refusal(request) is None:
            return self.not_found_response()

        def build(filters: Mapping[str, str]) -> list[Order]:
            return [o for o in orders_for(person) if order_matches(o, filters)] if person else []

        return self._listing(request, "orders", build, records.order)

    async def _orders(self, request: Request) -> Response:
        def build(filters: Mapping[str, str]) -> list[Order]:
            if filters.get("ids"):
                found = (
                    find_order(self.people, _int(raw, "ids")) for raw in filters["ids"].split(",")
                )
                candidates = sorted(
                    (o for o in found if o), key=lambda o: o.created_at, reverse=True
                )
            elif filters.get("customer_id"):
                person = self._by_shopify_id.get(_int(filters["customer_id"], "customer_id"))
                candidates = list(orders_for(person)) if person else []
            else:
                candidates = sorted(
                    (o for p in self.people for o in orders_for(p)),
                    key=lambda o: o.created_at,
                    reverse=True,
                )
            return [o for o in candidates if order_matches(o, filters)]

        return self._listing(request, "orders", build, records.order)

    # Products and inventory ---------------------------------------------------
    async def _products(self, request: Request) -> Response:
        def build(filters: Mapping[str, str]) -> list[Any]:
            return [p for p in self._catalogue.products if product_matches(p, filters)]

        return self._listing(
            request,
            "products",
            build,
            lambda p: records.product(p, self.available(p.inventory_item_id)),
        )

    async def _product(self, request: Request) -> Response:
        if (refusal := self._refusal(request)) is not None:
            return refusal
        try:
            found = self._catalogue.by_id.get(int(request.path_params["id"]))
        except ValueError:
            found = None
        if found is None:
            return self.not_found_response()
        return json_response(
            {"product": records.product(found, self.available(found.inventory_item_id))}
        )

    async def _inventory_levels(self, request: Request) -> Response:
        def build(filters: Mapping[str, str]) -> list[int]:
            raw_items, raw_locations = (
                filters.get("inventory_item_ids"),
                filters.get("location_ids"),
            )
            if not raw_items and not raw_locations:
                raise FilterError(
                    "inventory_item_ids", "inventory_item_ids or location_ids must be present"
                )
            if raw_locations and LOCATION_ID not in {
                _int(x, "location_ids") for x in raw_locations.split(",")
            }:
                return []
            if not raw_items:
                return list(self._stock)
            return [
                i
                for i in dict.fromkeys(_int(x, "inventory_item_ids") for x in raw_items.split(","))
                if i in self._stock
            ]

        def render(item_id: int) -> dict[str, Any]:
            available, updated = self._stock[item_id]
            return records.inventory_level(item_id, LOCATION_ID, available, updated)

        return self._listing(request, "inventory_levels", build, render)


def _int(raw: str, field: str) -> int:
    try:
        return int(raw.strip())
    except ValueError as exc:
        raise FilterError(field, f"{raw!r} is not an id") from exc
