"""Seeding the embedded database with the deterministic demo population."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from demo.people.population import Person
from gateway.db.identity_models import IdentityLink
from gateway.db.models import Attribute, Consent, ConsentChange, Customer, Identity

# Stable ids: the same person gets the same unified id in every demo database.
_NAMESPACE = uuid.UUID("6f1c2d4e-8a5b-4c3d-9e7f-0a1b2c3d4e5f")
CRM_SOURCE = "hubspot"
_SEEDED_SOURCES = ("hubspot", "soap_crm", "shopify", "segment")


def customer_id_for(person: Person) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, person.email)


def _rows(people: Sequence[Person]) -> dict[type, list[dict[str, Any]]]:
    customers, identities, attributes, consents = [], [], [], []
    for person in people:
        cid = customer_id_for(person)
        customers.append(
            {
                "id": cid,
                "email": person.email,
                "phone": person.phone,
                "first_name": person.first_name,
                "last_name": person.last_name,
                "locale": person.locale,
                "created_at": person.created_at,
                "updated_at": person.updated_at,
            }
        )
        for source, external_id in (
            ("hubspot", person.hubspot_id),
            ("soap_crm", f"C-{person.index:06d}"),
            ("shopify", str(person.shopify_id)),
            ("segment", person.segment_user_id),
        ):
            identities.append(
                {
                    "customer_id": cid,
                    "source": source,
                    "external_id": external_id,
                    "created_at": person.created_at,
                }
            )
        # Every golden value with its provenance, e-mail included: merges rebuild the
        # golden profile from these rows, and an erasure tombstones what they hold.
        for name in ("email", "first_name", "last_name", "phone", "locale"):
            attributes.append(
                {
                    "customer_id": cid,
                    "name": name,
                    "value": getattr(person, name),
                    "source": CRM_SOURCE,
                    "observed_at": person.updated_at,
                }
            )
        for purpose, granted in (
            ("email_marketing", person.email_marketing_consent),
            ("personalisation", person.personalisation_consent),
            ("analytics", person.analytics_consent),
        ):
            consents.append(
                {
                    "customer_id": cid,
                    "purpose": purpose,
                    "granted": granted,
                    "source": CRM_SOURCE,
                    "recorded_at": person.updated_at,
                }
            )
    return {
        Customer: customers,
        Identity: identities,
        Attribute: attributes,
        Consent: consents,
        ConsentChange: consents,  # the history starts with the seeded statement
    }


async def seed(sessions: async_sessionmaker[AsyncSession], people: Sequence[Person]) -> int:
    """Insert the people not yet present; returns how many were added. Safe to re-run."""
    async with sessions.begin() as session:
        existing = set(await session.scalars(select(Customer.email)))
        missing = [p for p in people if p.email not in existing]
        for model, rows in _rows(missing).items():
            if rows:
                await session.execute(insert(model), rows)
    return len(missing)


async def seed_evidence(
    sessions: async_sessionmaker[AsyncSession], people: Sequence[Person]
) -> int:
    """Why each seeded identity belongs to its person, as the linker records it when it
    loads records (``identity_links``): the CRM's record made the customer (``new``), and
    every other system's record joined it on the person's email, which each system holds
    (``email``, matched to the CRM's record). ``seed`` inserts the people as already
    linked, so without this the Customer 360 page has no evidence to show for them. Only
    the people's identities that have none; returns how many links were written."""
    ids = [customer_id_for(person) for person in people]
    written = 0
    async with sessions.begin() as session:
        for start in range(0, len(ids), 500):  # bound the IN list
            part = ids[start : start + 500]
            unlinked = select(IdentityLink.id).where(IdentityLink.identity_id == Identity.id)
            rows = (
                await session.execute(
                    select(Identity.id, Identity.customer_id, Identity.source, Identity.created_at)
                    .where(Identity.customer_id.in_(part), ~unlinked.exists())
                    .order_by(Identity.id)
                )
            ).all()
            crm = {row.customer_id: row.id for row in rows if row.source == CRM_SOURCE}
            links = [
                {
                    "customer_id": row.customer_id,
                    "identity_id": row.id,
                    "matched_identity_id": None
                    if row.source == CRM_SOURCE
                    else crm[row.customer_id],
                    "rule": "new" if row.source == CRM_SOURCE else "email",
                    "score": None,
                    "reason": None,
                    "created_at": row.created_at,
                }
                for row in rows
                if row.customer_id in crm and row.source in _SEEDED_SOURCES
            ]
            if links:
                await session.execute(insert(IdentityLink), links)
            written += len(links)
    return written


async def count_customers(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Customer)) or 0)
