"""Profiles read in bulk: a batch of customers, their identities and their consents in
three plain queries, shaped straight into ``CustomerProfile`` values.

A send reads profiles a thousand at a time (``customers(ids:)``, a segment's page).
Through the ORM, each of those customers and each of their identity and consent rows
became a mapped object first (identity map, instance state, collections): 400 ms of
the event loop's time for 1,000 customers, where the values themselves cost a tenth.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, any_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import Consent, Customer, Identity
from gateway.privacy.consent import ConsentRecord
from gateway.profiles.customers import CustomerProfile, IdentityRecord

_COLUMNS = (
    Customer.id,
    Customer.email,
    Customer.phone,
    Customer.first_name,
    Customer.last_name,
    Customer.locale,
    Customer.created_at,
    Customer.updated_at,
)


def among(session: AsyncSession, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN values``: on Postgres one array parameter (``= ANY``); an IN list of
    1,000 values is rendered anew, a placeholder each, on every execution (27 ms)."""
    clause: ColumnElement[bool]
    if session.get_bind().dialect.name == "postgresql":
        clause = column == any_(bindparam("among", list(values), type_=ARRAY(column.type)))
    else:
        clause = column.in_(values)
    return clause


_CONSENT_COLUMNS = (
    Consent.customer_id,
    Consent.purpose,
    Consent.granted,
    Consent.source,
    Consent.recorded_at,
)


async def read_profiles(
    session: AsyncSession, column: Any, values: Sequence[Any]
) -> list[CustomerProfile]:
    """The profiles of the customers whose ``column`` (id, email) is one of ``values``,
    with their identities (by source) and consents (by purpose), as the ORM
    relationships order them."""
    if not values:
        return []
    # Core, on the session's connection: the ORM's result machinery costs per row too.
    connection = await session.connection()
    rows = (await connection.execute(select(*_COLUMNS).where(among(session, column, values)))).all()
    if not rows:
        return []
    ids = [row[0] for row in rows]
    identities: defaultdict[uuid.UUID, list[IdentityRecord]] = defaultdict(list)
    found: Any = await connection.execute(
        select(Identity.customer_id, Identity.source, Identity.external_id)
        .where(among(session, Identity.customer_id, ids))
        .order_by(Identity.source, Identity.id)
    )
    for customer_id, source, external_id in found:
        identities[customer_id].append(IdentityRecord(source, external_id))
    consents: defaultdict[uuid.UUID, list[ConsentRecord]] = defaultdict(list)
    found = await connection.execute(
        select(
            Consent.customer_id,
            Consent.purpose,
            Consent.granted,
            Consent.source,
            Consent.recorded_at,
        )
        .where(among(session, Consent.customer_id, ids))
        .order_by(Consent.purpose)
    )
    for customer_id, purpose, granted, source, recorded_at in found:
        consents[customer_id].append(ConsentRecord(purpose, granted, source, recorded_at))
    return [
        CustomerProfile(
            *row,
            identities=tuple(identities.get(row[0], ())),
            consents=tuple(consents.get(row[0], ())),
        )
        for row in rows
    ]
