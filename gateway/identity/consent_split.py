"""Whose consent an unmerge hands to the split-off customer.

A merge moves every consent statement to the survivor. A statement names the identity
it was made for when its customer was that identity alone (``consent_history.
identity_id``); one made for a customer of several identities (or of none) names none,
since whose it was cannot be told. The split-off identity joined the customer at its
first link there (``identity_links``, else its creation): a statement naming no
identity made since then was made *while merged*, and either person may have made it.

When unsure, nobody receives a grant someone else gave. On an unmerge:

- the statements made for the split-off identity go with it, history included;
- a grant made while merged is nobody's current statement any more: its history row
  stays with the survivor (a steward reads it), but counts for neither side;
- a withdrawal made while merged counts for both (erring to suppression): it stays
  in the survivor's history and is copied into the split-off customer's;
- the survivor's current statement for a purpose, if it was the split-off identity's
  or a grant made while merged, gives way to the survivor's own latest statement for
  that purpose (one naming a remaining identity, naming none but made before the
  split-off identity joined, or a withdrawal made while merged), or to none;
- the split-off customer's current statement per purpose is the latest of its own
  and the withdrawals made while merged, except that a grant is not assumed when the
  merged customer stated anything later for that purpose (it may have been this person
  withdrawing, or the other granting): then it has no consent for that purpose.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.identity_models import IdentityLink
from gateway.db.models import Consent, ConsentChange, Event, Identity, as_utc

_ANALYTICS = "analytics"  # the purpose exports and behaviour are kept under


def _order(change: ConsentChange) -> tuple[datetime, int]:
    return as_utc(change.recorded_at), change.id


def _is(current: Consent, change: ConsentChange) -> bool:
    return (
        as_utc(current.recorded_at) == as_utc(change.recorded_at)
        and current.granted == change.granted
        and current.source == change.source
    )


async def _joined(session: AsyncSession, identity: Identity, owner: uuid.UUID) -> datetime:
    """Since when a statement naming no identity may have been made for ``identity``:
    its earliest link on ``owner`` (links move with a merge, so this may be its first
    own customer's), else its creation. Erring early errs to suppression."""
    linked = await session.scalar(
        select(func.min(IdentityLink.created_at)).where(
            IdentityLink.identity_id == identity.id, IdentityLink.customer_id == owner
        )
    )
    return as_utc(linked if linked is not None else identity.created_at)


async def split_consents(
    session: AsyncSession, identity: Identity, owner: uuid.UUID, new: uuid.UUID
) -> None:
    """Hand ``new`` (split from ``owner``) the statements made for ``identity``."""
    joined = await _joined(session, identity, owner)
    history = list(
        await session.scalars(select(ConsentChange).where(ConsentChange.customer_id == owner))
    )
    moved: defaultdict[str, list[ConsentChange]] = defaultdict(list)
    kept: defaultdict[str, list[ConsentChange]] = defaultdict(list)
    unsure: defaultdict[str, list[ConsentChange]] = defaultdict(list)  # made while merged
    for change in history:
        if change.identity_id == identity.id:
            moved[change.purpose].append(change)
        else:
            kept[change.purpose].append(change)
            if change.identity_id is None and as_utc(change.recorded_at) >= joined:
                unsure[change.purpose].append(change)
    current = {
        c.purpose: c
        for c in await session.scalars(select(Consent).where(Consent.customer_id == owner))
    }
    for purpose in moved.keys() | unsure.keys():
        theirs = moved[purpose]
        for change in theirs:
            change.customer_id = new
        grants = [c for c in unsure[purpose] if c.granted]
        withdrawals = [c for c in unsure[purpose] if not c.granted]
        own = [c for c in kept[purpose] if not any(c is g for g in grants)]
        survivor = current.get(purpose)
        if survivor is not None and any(_is(survivor, c) for c in theirs + grants):
            if not own:
                await session.delete(survivor)
                if purpose == _ANALYTICS and survivor.granted:
                    await _out_of_exports(session, owner)
            else:
                left = max(own, key=_order)
                survivor.granted, survivor.source = left.granted, left.source
                survivor.recorded_at = left.recorded_at
        for change in withdrawals:
            session.add(
                ConsentChange(
                    customer_id=new,
                    purpose=purpose,
                    granted=False,
                    source=change.source,
                    recorded_at=change.recorded_at,
                )
            )
        if not theirs and not withdrawals:
            continue
        latest = max(theirs + withdrawals, key=_order)
        later = any(_order(change) > _order(latest) for change in kept[purpose])
        if latest.granted and later:
            continue
        session.add(
            Consent(
                customer_id=new,
                purpose=purpose,
                granted=latest.granted,
                source=latest.source,
                recorded_at=latest.recorded_at,
            )
        )
    await session.flush()


async def _out_of_exports(session: AsyncSession, customer_id: uuid.UUID) -> None:
    """The customer's events marked changed: their analytics grant is gone with the
    statement deleted, and an export withdraws the events of a customer without one only
    when it sees them change (a withdrawal is a row it sees; a deleted row names no
    customer). Left, the warehouse kept events the database no longer exports."""
    await session.execute(
        update(Event).where(Event.customer_id == customer_id).values(type=Event.type)
    )
