"""The second yardstick for bench/load: a minimal Strawberry app returning one customer
from a dict, its parser and validation caches on.

Served by ``uvicorn bench.support.minimal:app --workers 2`` like the gateway, and driven
with the gateway's own single-customer query: the ratio gateway / minimal Strawberry is
what the gateway adds to GraphQL itself (auth, limits, audit, federation, caches).
"""

from __future__ import annotations

import strawberry
from starlette.applications import Starlette
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache


@strawberry.type
class Money:
    amount: str
    currency: str


@strawberry.type
class Customer:
    id: strawberry.ID
    email: str
    first_name: str
    last_name: str
    lifecycle_stage: str
    company: str
    lifetime_value: Money
    order_count: int


_ONE = Customer(
    id=strawberry.ID("5b0f6c5e-8d5c-4d55-9a55-0c4a3c1f1f00"),
    email="ada@example.com",
    first_name="Ada",
    last_name="Lovelace",
    lifecycle_stage="customer",
    company="Analytical Engines",
    lifetime_value=Money(amount="1234.50", currency="EUR"),
    order_count=7,
)
CUSTOMERS: dict[str, Customer] = {_ONE.email: _ONE}


@strawberry.type
class Query:
    @strawberry.field
    def customer(self, email: str) -> Customer | None:
        return CUSTOMERS.get(email, _ONE)  # one customer, whoever is asked for


# Factories, as Strawberry asks: both caches live at module level, shared by requests.
schema = strawberry.Schema(
    query=Query, extensions=[lambda: ParserCache(), lambda: ValidationCache()]
)
app = Starlette(routes=[Route("/graphql", GraphQL(schema), methods=["GET", "POST"])])
