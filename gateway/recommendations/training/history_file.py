"""A history export as interactions of stored customers (``gateway recs build --interactions``).

A shop that brings its order or event history as a file (the format ``recs eval``
reads: ``user, item[, rating[, timestamp]]``, optionally an ``event`` column) names
its users its own way: the gateway's customer id, an email, or the id a source system
knows them by (``shopify``, ``hubspot``, …). Each user is resolved to a stored
customer here, in batches; a user no customer matches still teaches the model which
products go together, but gets no stored list (there is nobody to serve it to).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Customer, Identity
from gateway.profiles.contact_points import normalize_email
from gateway.recommendations.interactions import Interaction

_PER_QUERY = 500
UNRESOLVED_PREFIX = "file:"  # users no customer matches: never a customer id


@dataclass(frozen=True, slots=True)
class Resolved:
    interactions: list[Interaction]
    users: int
    matched: int


async def resolve_users(
    sessions: async_sessionmaker[AsyncSession], interactions: Sequence[Interaction], key: str
) -> Resolved:
    """The interactions with each user replaced by the customer id it names (``key``:
    ``id``, ``email`` or a source name)."""
    names = list(dict.fromkeys(x.user for x in interactions))
    found: dict[str, str] = {}
    async with sessions() as session:
        for start in range(0, len(names), _PER_QUERY):
            found.update(await _lookup(session, names[start : start + _PER_QUERY], key))
    resolved = [
        Interaction(found.get(x.user, UNRESOLVED_PREFIX + x.user), x.item, x.kind, x.at)
        for x in interactions
    ]
    return Resolved(resolved, len(names), len(found))


async def _lookup(session: AsyncSession, names: list[str], key: str) -> dict[str, str]:
    if key == "id":
        ids = {}
        for name in names:
            try:
                ids[uuid.UUID(name)] = name
            except ValueError:
                continue
        known = await session.scalars(select(Customer.id).where(Customer.id.in_(list(ids))))
        return {ids[customer_id]: str(customer_id) for customer_id in known}
    if key == "email":
        emails: dict[str, str] = {}
        for name in names:
            try:
                emails[normalize_email(name)] = name
            except ValueError:
                continue
        by_email = await session.execute(
            select(Customer.email, Customer.id).where(Customer.email.in_(list(emails)))
        )
        return {emails[email]: str(customer_id) for email, customer_id in by_email if email}
    rows = await session.execute(
        select(Identity.external_id, Identity.customer_id).where(
            Identity.source == key, Identity.external_id.in_(names)
        )
    )
    return {external_id: str(customer_id) for external_id, customer_id in rows}
