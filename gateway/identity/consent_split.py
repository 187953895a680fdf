"""Whose consent an unmerge hands to the split-off customer.

A merge moves every consent statement to the survivor. A statement names the identity
it was made for when its customer was that identity alone (``consent_history.
identity_id``); one made for a customer of several identities names none, since whose
it was cannot be told. On an unmerge:

- the statements made for the split-off identity go with it, history included;
- the survivor's current statement for a purpose, if it was one of those, gives way
  to the survivor's own latest statement for that purpose, or to none;
- the split-off customer's current statement per purpose is its own latest, except
  that a grant is not assumed when the merged customer stated anything later for that
  purpose (it may have been this person withdrawing, or the other granting): then the
  split-off customer has no consent for it. Statements naming no identity stay with
  the survivor. When unsure, nobody receives a grant someone else gave.
"""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import Consent, ConsentChange, as_utc


def _order(change: ConsentChange) -> tuple[object, int]:
    return as_utc(change.recorded_at), change.id


def _is(current: Consent, change: ConsentChange) -> bool:
    return (
        as_utc(current.recorded_at) == as_utc(change.recorded_at)
        and current.granted == change.granted
        and current.source == change.source
    )


async def split_consents(
    session: AsyncSession, identity_id: int, owner: uuid.UUID, new: uuid.UUID
) -> None:
    """Hand ``new`` (split from ``owner``) the statements made for ``identity_id``."""
    history = list(
        await session.scalars(select(ConsentChange).where(ConsentChange.customer_id == owner))
    )
    moved: defaultdict[str, list[ConsentChange]] = defaultdict(list)
    kept: defaultdict[str, list[ConsentChange]] = defaultdict(list)
    for change in history:
        (moved if change.identity_id == identity_id else kept)[change.purpose].append(change)
    if not moved:
        return
    current = {
        c.purpose: c
        for c in await session.scalars(select(Consent).where(Consent.customer_id == owner))
    }
    for purpose, theirs in moved.items():
        for change in theirs:
            change.customer_id = new
        own = max(theirs, key=_order)
        left = max(kept[purpose], key=_order) if kept[purpose] else None
        survivor = current.get(purpose)
        if survivor is not None and any(_is(survivor, change) for change in theirs):
            if left is None:
                await session.delete(survivor)
            else:
                survivor.granted, survivor.source = left.granted, left.source
                survivor.recorded_at = left.recorded_at
        later = any(_order(change) > _order(own) for change in kept[purpose])
        if own.granted and later:
            continue
        session.add(
            Consent(
                customer_id=new,
                purpose=purpose,
                granted=own.granted,
                source=own.source,
                recorded_at=own.recorded_at,
            )
        )
    await session.flush()
