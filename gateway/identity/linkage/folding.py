"""Folding one stored customer into another inside the linker's transaction.

The linker does this when the pairs across two existing customers say they are one
person (``clustering``); the rows move as ``merge_customers`` moves them, on the
batch's connection, and the customer left empty is deleted.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.identity_models import IdentityLink, IdentityReview
from gateway.db.locks import lock_customers
from gateway.db.models import (
    FOLD_OPERATION,
    Attribute,
    AuditEntry,
    Consent,
    ConsentChange,
    Customer,
    Event,
    Identity,
    utcnow,
)
from gateway.db.recommendation_models import SERVED
from gateway.identity.observations import drop_shared_observations


async def fold_customers(
    connection: AsyncConnection, merges: Sequence[tuple[uuid.UUID, uuid.UUID]]
) -> set[uuid.UUID]:
    """Fold each ``gone`` customer into its ``into``; returns the customers folded away.

    Both rows are locked first, in id order (as ``merge_customers`` does); a customer
    that has meanwhile vanished (erased) is skipped, and its records stay linked to
    ``into`` only through this batch's own decisions.
    """
    folded: set[uuid.UUID] = set()
    for gone, into in merges:
        if gone == into or gone in folded:
            continue
        # Already locked by the batch (``write_batch``); locking again here keeps this
        # function safe on its own and costs no wait.
        locked = await lock_customers(connection, (gone, into), deleting=True)
        if locked != {gone, into}:
            continue
        await _move_consents(connection, gone, into)
        await drop_shared_observations(connection, gone, into)
        for model in (Identity, Attribute, Event, IdentityLink, *SERVED):
            await connection.execute(
                update(model).where(model.customer_id == gone).values(customer_id=into)
            )
        await connection.execute(
            update(IdentityReview)
            .where(IdentityReview.candidate_customer_id == gone)
            .values(candidate_customer_id=into)
        )
        # Open reviews between the two are settled by the fold.
        mine = select(Identity.id).where(Identity.customer_id == into).scalar_subquery()
        await connection.execute(
            update(IdentityReview)
            .where(
                IdentityReview.candidate_customer_id == into,
                IdentityReview.identity_id.in_(mine),
                IdentityReview.status == "open",
            )
            .values(status="merged")
        )
        await connection.execute(delete(Customer).where(Customer.id == gone))
        await connection.execute(
            insert(AuditEntry).values(
                occurred_at=utcnow(),
                actor="identity-linker",
                operation=FOLD_OPERATION,
                customer_id=into,
                details={"merged": str(gone), "rule": "probabilistic"},
            )
        )
        folded.add(gone)
    return folded


async def _move_consents(connection: AsyncConnection, gone: uuid.UUID, into: uuid.UUID) -> None:
    """One consent per purpose survives: the most recently recorded of the two; of two
    made at the same instant, a withdrawal (a tie errs to suppression; the first row read
    won it)."""
    rows = (
        await connection.execute(
            select(Consent.id, Consent.purpose, Consent.recorded_at, Consent.granted).where(
                Consent.customer_id.in_([gone, into])
            )
        )
    ).all()
    newest: dict[str, tuple[datetime, bool, int]] = {}
    for consent_id, purpose, recorded_at, granted in rows:
        ranked = (recorded_at, not granted, consent_id)
        if purpose not in newest or ranked[:2] > newest[purpose][:2]:
            newest[purpose] = ranked
    keep = {consent_id for *_, consent_id in newest.values()}
    drop = [consent_id for consent_id, *_ in rows if consent_id not in keep]
    if drop:
        await connection.execute(delete(Consent).where(Consent.id.in_(drop)))
    await connection.execute(
        update(Consent)
        .where(and_(Consent.customer_id == gone, Consent.id.in_(keep)))
        .values(customer_id=into)
    )
    # Every statement either record made stays in the history, now the survivor's.
    await connection.execute(
        update(ConsentChange).where(ConsentChange.customer_id == gone).values(customer_id=into)
    )
