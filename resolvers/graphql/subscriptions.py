"""GraphQL subscriptions over graphql-transport-ws, on the same ``/graphql`` route."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime

import strawberry
from strawberry.types import Info

from gateway.access.api_keys import Scope
from gateway.ingest.notifications import CustomerChange
from gateway.privacy.audit import Action
from gateway.profiles.customers import parse_customer_id
from resolvers.graphql.access import audit, require
from resolvers.graphql.context import Context


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@strawberry.type(description="What changed about one customer; read the customer again for values.")
class CustomerUpdate:
    id: strawberry.ID
    source: str = strawberry.field(description="The system that reported it: hubspot, shopify…")
    event_type: str = strawberry.field(description="The source's event, e.g. customers/update.")
    event_id: str
    changed_fields: list[str] = strawberry.field(
        description="Customer fields this change touched, as this schema names them."
    )
    occurred_at: datetime

    @classmethod
    def from_change(cls, change: CustomerChange) -> CustomerUpdate:
        return cls(
            id=strawberry.ID(str(change.customer_id)),
            source=change.source,
            event_type=change.event_type,
            event_id=change.event_id,
            changed_fields=[_camel(name) for name in change.fields],
            occurred_at=change.occurred_at,
        )


@strawberry.type
class Subscription:
    # strawberry.subscription is not annotated in this version; the resolver itself is.
    @strawberry.subscription(
        description="Fires after each committed change to this customer, on any instance.",
    )
    async def customer_updated(
        self, info: Info[Context, None], id: strawberry.ID
    ) -> AsyncGenerator[CustomerUpdate, None]:
        require(info, Scope.PROFILES_READ)
        customer_id = parse_customer_id(id)
        audit(info, Action.READ, [customer_id])  # watching a customer's changes reads them
        notifications = info.context.services.notifications
        async with notifications.subscribe(customer_id) as changes:
            async for change in changes:
                yield CustomerUpdate.from_change(change)
