"""Sample Shopify GraphQL Admin API 2024-10: customers with their orders, cost-limited.

``POST /admin/api/2024-10/graphql.json`` over the same people and orders as the REST
shape. The schema is the part of Shopify's an adapter needs (customers found by a
search query, their order count and spend, their orders newest first with line items),
parsed, validated and executed by graphql-core. Every answer carries
``extensions.cost`` as Shopify's does; a query whose requested cost exceeds the bucket
left answers ``THROTTLED`` (HTTP 200, no data), one over ``MAX_QUERY_COST``
``MAX_COST_EXCEEDED`` (``cost.py`` has the arithmetic).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    build_schema,
    execute,
    parse,
    validate,
)
from starlette.requests import Request
from starlette.responses import Response

from demo.people.orders import Order, currency_of, orders_for, spend
from demo.people.population import Person
from demo.upstreams.service import json_body, json_response
from demo.upstreams.shopify.cost import MAX_QUERY_COST, Bucket, CostWalk, Plan
from demo.upstreams.shopify.filters import search_customers
from demo.upstreams.shopify.records import customer_updated_at, shopify_time

SDL = """
scalar DateTime
scalar Decimal
scalar UnsignedInt64
enum CurrencyCode { USD EUR GBP }
enum CustomerState { DISABLED INVITED ENABLED DECLINED }
enum CustomerEmailMarketingState { NOT_SUBSCRIBED PENDING SUBSCRIBED UNSUBSCRIBED }
enum OrderSortKeys { CREATED_AT PROCESSED_AT ID }
enum CustomerSortKeys { ID UPDATED_AT CREATED_AT }
type PageInfo { hasNextPage: Boolean! hasPreviousPage: Boolean!
  startCursor: String endCursor: String }
type MoneyV2 { amount: Decimal! currencyCode: CurrencyCode! }
type MoneyBag { shopMoney: MoneyV2! presentmentMoney: MoneyV2! }
type CustomerEmailMarketingConsentState { marketingState: CustomerEmailMarketingState! }
type Product { id: ID! }
type ProductVariant { id: ID! }
type LineItem { id: ID! title: String! quantity: Int! sku: String
  originalUnitPriceSet: MoneyBag! product: Product variant: ProductVariant }
type LineItemEdge { node: LineItem! cursor: String! }
type LineItemConnection { nodes: [LineItem!]! edges: [LineItemEdge!]! pageInfo: PageInfo! }
type Order { id: ID! name: String! email: String createdAt: DateTime! processedAt: DateTime!
  displayFinancialStatus: String displayFulfillmentStatus: String! currencyCode: CurrencyCode!
  totalPriceSet: MoneyBag! subtotalPriceSet: MoneyBag totalTaxSet: MoneyBag customer: Customer
  lineItems(first: Int, after: String): LineItemConnection! }
type OrderEdge { node: Order! cursor: String! }
type OrderConnection { nodes: [Order!]! edges: [OrderEdge!]! pageInfo: PageInfo! }
type Customer { id: ID! email: String firstName: String lastName: String phone: String
  numberOfOrders: UnsignedInt64! amountSpent: MoneyV2! createdAt: DateTime!
  updatedAt: DateTime! state: CustomerState! verifiedEmail: Boolean! tags: [String!]!
  lastOrder: Order emailMarketingConsent: CustomerEmailMarketingConsentState
  orders(first: Int, after: String, sortKey: OrderSortKeys, reverse: Boolean,
    query: String): OrderConnection! }
type CustomerEdge { node: Customer! cursor: String! }
type CustomerConnection { nodes: [Customer!]! edges: [CustomerEdge!]! pageInfo: PageInfo! }
type QueryRoot {
  customers(first: Int, after: String, query: String, sortKey: CustomerSortKeys,
    reverse: Boolean): CustomerConnection!
  customer(id: ID!): Customer
}
schema { query: QueryRoot }
"""
_MAX_PAGE = 250
_DOCUMENTS_KEPT = 256


@cache
def schema() -> GraphQLSchema:
    """The schema, built once per process (it is immutable; every sample shares it)."""
    return build_schema(SDL)


class _UserError(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def gid(kind: str, number: int) -> str:
    return f"gid://shopify/{kind}/{number}"


def _money(amount: Any, currency: str) -> dict[str, Any]:
    money = {"amount": str(amount), "currencyCode": currency}
    return {"shopMoney": money, "presentmentMoney": money}


def _size(first: int | None) -> int:
    if first is None:
        raise _UserError("you must provide one of first or last", "BAD_REQUEST")
    if not 0 <= first <= _MAX_PAGE:
        raise _UserError(f"first must be between 0 and {_MAX_PAGE}", "BAD_REQUEST")
    return first


def _connection(items: Sequence[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {
        "nodes": list(items),
        "edges": [{"node": item, "cursor": item["id"]} for item in items],
        "pageInfo": {
            "hasNextPage": more,
            "hasPreviousPage": False,
            "startCursor": items[0]["id"] if items else None,
            "endCursor": items[-1]["id"] if items else None,
        },
    }


def _order(order: Order, owner: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
    def line_items(_: Any, info: Any, first: int | None = None, after: str | None = None) -> Any:
        size = _size(first)
        items = [
            {
                "id": gid("LineItem", item.id),
                "title": item.title,
                "quantity": item.quantity,
                "sku": item.sku,
                "originalUnitPriceSet": _money(item.price, order.currency),
                "product": {"id": gid("Product", item.product_id)},
                "variant": {"id": gid("ProductVariant", item.variant_id)},
            }
            for item in order.line_items
        ]
        return _connection(items[:size], len(items) > size)

    return {
        "id": gid("Order", order.id),
        "name": order.name,
        "email": order.email,
        "createdAt": shopify_time(order.created_at),
        "processedAt": shopify_time(order.processed_at),
        "displayFinancialStatus": order.financial_status.upper(),
        "displayFulfillmentStatus": (order.fulfillment_status or "unfulfilled").upper(),
        "currencyCode": order.currency,
        "totalPriceSet": _money(order.total, order.currency),
        "subtotalPriceSet": _money(order.subtotal, order.currency),
        "totalTaxSet": _money(order.tax, order.currency),
        "customer": lambda *_: owner(),
        "lineItems": line_items,
    }


def customer(person: Person) -> dict[str, Any]:
    """The Customer object (fields the resolvers compute are callables)."""
    orders = orders_for(person)
    count, total = spend(person)

    def owner() -> dict[str, Any]:
        return customer(person)

    def order_connection(
        _: Any,
        info: Any,
        first: int | None = None,
        after: str | None = None,
        sortKey: str = "ID",
        reverse: bool = False,
        query: str | None = None,
    ) -> Any:
        size = _size(first)
        keyed = {
            "CREATED_AT": lambda o: o.created_at,
            "PROCESSED_AT": lambda o: o.processed_at,
            "ID": lambda o: o.id,
        }[sortKey]
        ordered = sorted(orders, key=keyed, reverse=reverse)
        if after is not None:  # the cursor is the last order's gid
            ids = [gid("Order", o.id) for o in ordered]
            ordered = ordered[ids.index(after) + 1 :] if after in ids else []
        return _connection([_order(o, owner) for o in ordered[:size]], len(ordered) > size)

    tags = [
        t for t, on in (("vip", total > 1000), ("newsletter", person.email_marketing_consent)) if on
    ]
    return {
        "id": gid("Customer", person.shopify_id),
        "email": person.email,
        "firstName": person.first_name,
        "lastName": person.last_name,
        "phone": person.phone,
        "numberOfOrders": str(count),
        "amountSpent": {"amount": str(total), "currencyCode": currency_of(person)},
        "createdAt": shopify_time(person.created_at),
        "updatedAt": shopify_time(customer_updated_at(person)),
        "state": "ENABLED" if orders else "INVITED",
        "verifiedEmail": True,
        "tags": tags,
        "lastOrder": (lambda *_: _order(orders[0], owner)) if orders else None,
        "emailMarketingConsent": {
            "marketingState": "SUBSCRIBED" if person.email_marketing_consent else "NOT_SUBSCRIBED"
        },
        "orders": order_connection,
    }


def _resolve(value: Any, info: Any, **args: Any) -> Any:
    """Dict keys, calling the ones that are resolvers (graphql-core's default does not)."""
    field = value.get(info.field_name) if isinstance(value, Mapping) else None
    return field(value, info, **args) if callable(field) else field


_THROTTLED = {
    "message": "Throttled",
    "extensions": {
        "code": "THROTTLED",
        "documentation": "https://shopify.dev/api/usage/rate-limits",
    },
}


class ShopifyGraphQL:
    """The endpoint: authenticate, parse, validate, price, throttle, execute."""

    def __init__(
        self,
        people: Sequence[Person],
        refusal: Callable[[Request], Response | None],
        bucket: Bucket | None = None,
    ) -> None:
        self.people = people
        self._by_email = {p.email.lower(): p for p in people}
        self._by_id = {p.shopify_id: p for p in people}
        self._refusal = refusal
        self.bucket = bucket or Bucket()
        self.schema = schema()
        self.throttled = 0  # THROTTLED answers given, for tests and benchmarks
        self.points_spent = 0  # actual query cost charged, for benchmarks
        # The next this many queries are answered THROTTLED without extensions.cost, as
        # a proxy in front of the shop might: the client learns nothing of the bucket.
        self.throttle_blind = 0
        self._documents: dict[str, tuple[DocumentNode, list[GraphQLError]]] = {}

    def _checked(self, query: Any) -> tuple[DocumentNode, list[GraphQLError]]:
        """The parsed document and its validation errors, once per distinct query (a
        client sends the same few documents over and over, as Shopify's do)."""
        if not isinstance(query, str):
            raise TypeError("query must be a string")
        known = self._documents.get(query)
        if known is None:
            document = parse(query)
            known = (document, validate(self.schema, document))
            if len(self._documents) < _DOCUMENTS_KEPT:
                self._documents[query] = known
        return known

    def reset(self, plan: Plan | None = None) -> None:
        """A full bucket (of ``plan``, or the current one), no THROTTLED counted or
        to come."""
        self.bucket.set_plan(plan or self.bucket.plan)
        self.throttled = self.points_spent = self.throttle_blind = 0

    def actual_cost(self, query: str, variables: Mapping[str, Any]) -> int:
        """What the query would be charged (its actual cost), run without the bucket:
        for a benchmark's yardstick, the points the data it needs cost at the least."""
        document, problems = self._checked(query)
        if problems:
            raise ValueError(problems[0].message)
        [operation] = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        result = execute(
            self.schema,
            document,
            root_value=self._root(),
            variable_values=dict(variables),
            field_resolver=_resolve,
        )
        assert isinstance(result, ExecutionResult)
        if result.errors:
            raise ValueError(result.errors[0].message)
        return CostWalk(self.schema, {}, variables).actual(operation, result.data)

    def _root(self) -> dict[str, Any]:
        def customers(
            _: Any, info: Any, first: int | None = None, query: str = "", **__: Any
        ) -> Any:
            size = _size(first)
            found = search_customers(self.people, self._by_email, query or "", self._by_id)
            return _connection([customer(p) for p in found[:size]], len(found) > size)

        def one(_: Any, info: Any, id: str) -> Any:
            prefix = "gid://shopify/Customer/"
            number = id.removeprefix(prefix)
            person = self._by_id.get(int(number)) if number.isdigit() else None
            return customer(person) if id.startswith(prefix) and person else None

        return {"customers": customers, "customer": one}

    def _answer(self, errors: Sequence[Mapping[str, Any]], cost: dict[str, Any] | None) -> Response:
        body: dict[str, Any] = {"errors": errors}
        if cost is not None:
            body["extensions"] = {"cost": cost}
        return json_response(body)

    async def endpoint(self, request: Request) -> Response:
        if (refusal := self._refusal(request)) is not None:
            return refusal
        try:
            payload = await json_body(request)
            document, problems = self._checked(payload["query"])
            variables = payload.get("variables") or {}
            if not isinstance(variables, dict):
                raise TypeError("variables must be an object")
        except (ValueError, KeyError, TypeError, GraphQLError) as exc:
            return json_response({"errors": [{"message": str(exc)}]}, 400)
        if problems:
            return self._answer([p.formatted for p in problems], None)
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        walk = CostWalk(self.schema, fragments, variables)
        requested = walk.requested(operations[0])
        if requested > MAX_QUERY_COST:
            message = (
                f"Query cost is {requested}, which exceeds the single query max cost "
                f"limit ({MAX_QUERY_COST})."
            )
            error = {
                "message": message,
                "extensions": {
                    "code": "MAX_COST_EXCEEDED",
                    "cost": requested,
                    "maxCost": MAX_QUERY_COST,
                },
            }
            return self._answer([error], None)
        if self.throttle_blind > 0:
            self.throttle_blind -= 1
            self.throttled += 1
            return self._answer([_THROTTLED], None)
        if not self.bucket.take(requested):
            self.throttled += 1
            cost = {
                "requestedQueryCost": requested,
                "actualQueryCost": None,
                "throttleStatus": self.bucket.status(),
            }
            return self._answer([_THROTTLED], cost)
        result = execute(
            self.schema,
            document,
            root_value=self._root(),
            variable_values=variables,
            field_resolver=_resolve,
        )
        assert isinstance(result, ExecutionResult)  # every resolver here is synchronous
        if result.errors:
            self.bucket.refund(requested)
            return self._answer([e.formatted for e in result.errors], None)
        actual = walk.actual(operations[0], result.data)
        self.bucket.refund(requested - actual)
        self.points_spent += actual
        cost = {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": self.bucket.status(),
        }
        return json_response({"data": result.data, "extensions": {"cost": cost}})
