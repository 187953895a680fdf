"""The GraphQL schema: queries and mutations over the customer services."""

from __future__ import annotations

import logging
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.types import ExecutionContext, Info

from gateway.customers import parse_customer_id, parse_draft, parse_email_argument
from gateway.errors import InvalidInput
from resolvers.context import Context
from resolvers.errors import ErrorCodes, is_unexpected, mask_unexpected_errors
from resolvers.types import Customer, CustomerInput, selection_of

GatewayInfo = Info[Context, None]


@strawberry.type
class Query:
    @strawberry.field(description="One customer, by unified id or by email. Null when unknown.")
    async def customer(
        self, info: GatewayInfo, id: strawberry.ID | None = None, email: str | None = None
    ) -> Customer | None:
        if (id is None) == (email is None):
            raise InvalidInput("Give exactly one of the arguments 'id' and 'email'", field="id")
        customers = info.context.services.customers
        if id is not None:
            profile = await customers.get(parse_customer_id(id))
        else:
            profile = await customers.get_by_email(parse_email_argument(str(email)))
        if profile is None:
            return None
        customer = Customer.from_profile(profile, selection_of(info))
        customer.prefetch(info)
        return customer


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create a customer by email, or update the fields given.")
    async def upsert_customer(self, info: GatewayInfo, input: CustomerInput) -> Customer:
        data: dict[str, Any] = strawberry.asdict(input)
        data["identities"] = data.get("identities") or ()
        draft = parse_draft(data)
        return Customer.from_profile(await info.context.services.customers.upsert(draft))


logger = logging.getLogger("gateway.graphql")


class GatewaySchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Client mistakes are answered, not logged as failures; bugs keep their traceback.
        # Messages are not logged: they may quote customer input.
        for error in errors:
            if is_unexpected(error):
                logger.error("unexpected error in a resolver", exc_info=error.original_error,
                             extra={"path": error.path})


def build_schema() -> strawberry.Schema:
    """A new schema; built once per app, never per request."""
    return GatewaySchema(
        query=Query,
        mutation=Mutation,
        extensions=[ErrorCodes, mask_unexpected_errors],
    )
