"""Strawberry types for the Customer graph, shaped from service records."""

from __future__ import annotations

from datetime import datetime

import strawberry

from gateway.customers import CustomerProfile


@strawberry.type(description="The id a source system knows this customer by.")
class Identity:
    source: str = strawberry.field(description="The source system, e.g. hubspot, shopify.")
    external_id: str = strawberry.field(description="The customer's id in that system.")


@strawberry.type(description="One person, unified across the CRM, commerce and analytics.")
class Customer:
    id: strawberry.ID = strawberry.field(description="The gateway's unified customer id.")
    email: str | None
    phone: str | None = strawberry.field(description="E.164, e.g. +14155550123.")
    first_name: str | None
    last_name: str | None
    locale: str | None = strawberry.field(description="BCP 47 language tag, e.g. en-US.")
    created_at: datetime
    updated_at: datetime
    identities: list[Identity]

    @classmethod
    def from_profile(cls, profile: CustomerProfile) -> Customer:
        return cls(
            id=strawberry.ID(str(profile.id)),
            email=profile.email,
            phone=profile.phone,
            first_name=profile.first_name,
            last_name=profile.last_name,
            locale=profile.locale,
            created_at=profile.created_at,
            updated_at=profile.updated_at,
            identities=[Identity(source=i.source, external_id=i.external_id)
                        for i in profile.identities],
        )


@strawberry.input(description="An id this customer has in a source system.")
class IdentityInput:
    source: str
    external_id: str


@strawberry.input(description="Create a customer by email, or update the fields given.")
class CustomerInput:
    email: str
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = strawberry.field(default=None, description="Any format; stored E.164.")
    locale: str | None = None
    identities: list[IdentityInput] | None = None
