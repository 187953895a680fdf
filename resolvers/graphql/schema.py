"""The GraphQL schema: queries and mutations over the customer services."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext, ExecutionResult, Info

from gateway.access.api_keys import Scope
from gateway.errors import InvalidInput
from gateway.privacy.audit import Action
from gateway.profiles.customers import (
    CustomerProfile,
    parse_customer_id,
    parse_draft,
    parse_email_argument,
)
from gateway.settings import Settings
from resolvers.graphql.access import ScopedExecutionContext, audit, require
from resolvers.graphql.context import Context
from resolvers.graphql.errors import is_unexpected, masked
from resolvers.graphql.input_text import DATE_TIME
from resolvers.graphql.limits import build_limits
from resolvers.graphql.operation import DocumentCache, GatewayOperation
from resolvers.graphql.subscriptions import Subscription
from resolvers.graphql.types.customer import (
    Customer,
    CustomerInput,
    shaped_customer,
    shaped_customers,
)
from resolvers.graphql.types.experiments import ExperimentMutation, ExperimentQuery
from resolvers.graphql.types.identity import IdentityMutation, IdentityQuery, ReviewMutation
from resolvers.graphql.types.privacy import PrivacyMutation, PrivacyQuery
from resolvers.graphql.types.render import TemplateMutation, TemplateQuery
from resolvers.graphql.types.runs import RunMutation
from resolvers.graphql.types.segments import (
    SEGMENT_VALUE,
    SegmentMutation,
    SegmentQuery,
    SegmentValue,
)

GatewayInfo = Info[Context, None]


@strawberry.type
class Query:
    @strawberry.field(
        description="One customer, by unified id, by email, or by an id in a "
        "source system written `source:externalId` (e.g. `hubspot:51000007`). "
        "Null when unknown.",
    )
    async def customer(
        self,
        info: GatewayInfo,
        id: strawberry.ID | None = None,
        email: str | None = None,
        identity: str | None = None,
    ) -> Customer | None:
        """One customer; its upstream fields load only when selected."""
        require(info, Scope.PROFILES_READ)
        if sum(arg is not None for arg in (id, email, identity)) != 1:
            raise InvalidInput(
                "Give exactly one of the arguments 'id', 'email' and 'identity'", field="id"
            )
        customers = info.context.services.customers
        if id is not None:
            profile = await customers.get(parse_customer_id(id))
        elif email is not None:
            profile = await customers.get_by_email(parse_email_argument(email))
        else:
            source, _, external_id = str(identity).partition(":")
            if not source or not external_id:
                raise InvalidInput(
                    "Invalid value for argument 'identity': write it as source:externalId",
                    field="identity",
                )
            profile = await customers.get_by_identity(source, external_id)
        return (await _customers([profile], info))[0]

    @strawberry.field(
        description="Many customers at once, in the order asked (null where "
        "unknown): give `ids` or `emails`. Upstream reads are batched.",
    )
    async def customers(
        self,
        info: GatewayInfo,
        ids: list[strawberry.ID] | None = None,
        emails: list[str] | None = None,
    ) -> list[Customer | None]:
        require(info, Scope.PROFILES_READ)
        if (ids is None) == (emails is None):
            raise InvalidInput("Give exactly one of the arguments 'ids' and 'emails'", field="ids")
        keys = ids if ids is not None else emails
        limit = info.context.services.settings.max_batch_size
        if len(keys or []) > limit:
            raise InvalidInput(
                f"At most {limit} customers per batch; got {len(keys or [])}",
                field="ids" if ids is not None else "emails",
            )
        store = info.context.services.customers
        if ids is not None:
            wanted = [parse_customer_id(i) for i in ids]
            found = await store.get_many(wanted)
            return await _customers([found.get(i) for i in wanted], info)
        addresses = [parse_email_argument(e) for e in emails or []]
        by_email = await store.get_many_by_email(addresses)
        return await _customers([by_email.get(a) for a in addresses], info)


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Create a customer by email, or update the fields given.",
    )
    async def upsert_customer(self, info: GatewayInfo, input: CustomerInput) -> Customer:
        require(info, Scope.PROFILES_WRITE)
        data: dict[str, Any] = strawberry.asdict(input)
        data["identities"] = data.get("identities") or ()
        draft = parse_draft(data)
        profile = await info.context.services.customers.upsert(draft)
        audit(info, Action.CHANGE, [profile.id])
        await info.context.services.federation.invalidate(profile.id)
        return await shaped_customer(profile, info)

    @strawberry.mutation(
        description="Drop everything cached about one customer, on every "
        "instance sharing the cache. True if the customer exists.",
    )
    async def invalidate_customer(self, info: GatewayInfo, id: strawberry.ID) -> bool:
        require(info, Scope.PROFILES_WRITE)
        customer_id = parse_customer_id(id)
        await info.context.services.federation.invalidate(customer_id)
        customers = info.context.services.customers
        profile = await customers.store.get(customer_id)
        if profile is not None:
            audit(info, Action.CHANGE, [customer_id])
            await customers.forget(profile)
        return profile is not None


async def _customers(
    profiles: list[CustomerProfile | None], info: GatewayInfo
) -> list[Customer | None]:
    """Found customers, audited as read, shaped as every Customer is."""
    if len(profiles) > 100:
        await asyncio.sleep(0)  # a batch's reads and its shaping in two turns of the loop
    audit(info, Action.READ, [p.id for p in profiles if p is not None])
    return await shaped_customers(profiles, info)


logger = logging.getLogger("gateway.graphql")


class GatewaySchema(strawberry.Schema):
    documents: DocumentCache  # parsed and validated documents, kept across requests

    async def execute(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        result = await super().execute(*args, **kwargs)
        if result.errors:
            result.errors = masked(result.errors)
        return result

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Client mistakes are answered, not logged as failures; bugs keep their traceback.
        # Messages are not logged: they may quote customer input.
        for error in errors:
            if is_unexpected(error):
                logger.error(
                    "unexpected error in a resolver",
                    exc_info=error.original_error,
                    extra={"path": error.path},
                )


def build_schema(settings: Settings | None = None) -> GatewaySchema:
    """A new schema; built once per app, never per request.

    Without settings, the limits take their defaults (the environment is not read).
    """
    settings = settings or Settings.model_construct()
    limits = build_limits(settings)
    documents = DocumentCache(limits)
    schema = GatewaySchema(
        query=merge_types(
            "Query",
            (Query, TemplateQuery, PrivacyQuery, IdentityQuery, ExperimentQuery, SegmentQuery),
        ),
        mutation=merge_types(
            "Mutation",
            (
                Mutation,
                TemplateMutation,
                IdentityMutation,
                ReviewMutation,
                PrivacyMutation,
                RunMutation,
                ExperimentMutation,
                SegmentMutation,
            ),
        ),
        subscription=Subscription,
        # Limits' rule classes are built once here, so cached validations keep hitting.
        extensions=[lambda: GatewayOperation(limits, documents)],
        # Checks what a reply reveals to a key that may not read profiles (resolvers/access).
        execution_context_class=ScopedExecutionContext,
        config=StrawberryConfig(scalar_map={SegmentValue: SEGMENT_VALUE, datetime: DATE_TIME}),
    )
    schema.documents = documents
    return schema
