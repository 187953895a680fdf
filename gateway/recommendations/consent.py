"""The one rule for whether a customer's recommendations may use their behaviour.

Personalised recommendations profile a person's browsing and purchases, which needs
their consent for the purpose ``personalisation``. The gateway stores the consent the
CRM records (``consents``, one row per customer and purpose); when that row says
granted, recommendations are personalised; when it says refused, or when no consent
is stored at all, they are not: popularity only, and the reason says so. Refusal by
default is the GDPR reading (consent is opt-in) and the safe failure.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Consent

PURPOSE = "personalisation"


async def personalisation_allowed(
    sessions: async_sessionmaker[AsyncSession], customer_id: uuid.UUID
) -> bool:
    async with sessions() as session:
        granted = await session.scalar(
            select(Consent.granted).where(
                Consent.customer_id == customer_id, Consent.purpose == PURPOSE
            )
        )
    return granted is True  # None (nothing stored) is a refusal


async def personalised_customers(session: AsyncSession) -> set[uuid.UUID]:
    """Every customer whose recommendations may be personalised (for ``recs build``)."""
    granted = await session.scalars(
        select(Consent.customer_id).where(Consent.purpose == PURPOSE, Consent.granted.is_(True))
    )
    return set(granted)
