"""Whose a consent statement is: the identity it was made for, when that can be told.

A statement is one identity's when its customer is that identity alone: it has one
identity, and no merge brought that identity in (its latest link is not a manual
merge's). A customer formed by merging one without identities (created by address
alone) with a one-identity customer has one identity, yet either person may be
speaking: its statements name no identity, so an unmerge hands a grant to neither
(gateway/identity/consent_split.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import ColumnElement, ScalarSelect, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.bulk import matching
from gateway.db.identity_models import IdentityLink
from gateway.db.models import Identity

MERGE_RULE = "manual"  # the rule of the link a merge gives each identity it moves


def latest_link_rule(
    identity_id: ColumnElement[int] | int, customer_id: uuid.UUID | None = None
) -> ScalarSelect[str]:
    """The rule of an identity's latest link (optionally its latest link to one customer):
    a merge's rule there means a merge brought the identity in."""
    query = select(IdentityLink.rule).where(IdentityLink.identity_id == identity_id)
    if customer_id is not None:
        query = query.where(IdentityLink.customer_id == customer_id)
    return (
        query.order_by(IdentityLink.created_at.desc(), IdentityLink.id.desc())
        .limit(1)
        .scalar_subquery()
    )


async def sole_identities(
    connection: AsyncConnection, customers: Iterable[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """Of ``customers``, those that are one identity alone, and that identity: one
    grouped query a chunk however large the batch (an ESP's 1,000 events)."""
    sole: dict[uuid.UUID, int] = {}
    for clause in matching(connection, Identity.customer_id, list(customers)):
        single = (
            select(Identity.customer_id, func.min(Identity.id).label("identity_id"))
            .where(clause)
            .group_by(Identity.customer_id)
            .having(func.count() == 1)
            .subquery()
        )
        # Asked of the one identity of each such customer only, not of every identity.
        latest_rule = latest_link_rule(single.c.identity_id).correlate(single)
        query = select(single.c.customer_id, single.c.identity_id).where(
            func.coalesce(latest_rule, "") != MERGE_RULE
        )
        sole.update({row[0]: row[1] for row in await connection.execute(query)})
    return sole
