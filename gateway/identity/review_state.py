"""Whether a review still describes its two records, at the moment it is resolved, and
what an unmerge reopens.

A review names two stored records (or, over the identity limit, a record and a
customer). Merges, unmerges and the linker move records between customers while a
person reads the pair and decides: the resolution acts on where the records are when it
commits, never on where they were when the page was read (reviews.py), and a review
whose answer an unmerge took back is asked again (``reopen_settled``).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from gateway.db.identity_models import IdentityReview
from gateway.db.locks import lock_customers
from gateway.db.models import AuditEntry, Identity
from gateway.db.retries import StaleRead
from gateway.errors import Conflict

UNMERGE_OPERATION = "unmerge_customer"  # audited by unmerges.py


async def still_apart(
    connection: AsyncConnection,
    sides: dict[int, uuid.UUID],
    customers: tuple[uuid.UUID, uuid.UUID],
    *,
    deleting: bool,
) -> None:
    """Lock ``customers`` (the record's, the candidate's) and make sure each record in
    ``sides`` (identity -> the customer it was read in) is still there, both customers
    still stored: otherwise ``StaleRead``, decided again on fresh reads.

    Held until the resolution commits, the locks are the ones the linker takes on the
    customers it links to or folds, and an unmerge on the customer it splits: a merge
    read before an unmerge split the candidate off would join the record to the customer
    the candidate left, whom nobody compared it with (the wrong person); a keep-apart
    committed while a linker batch decided would be joined by it anyway."""
    found = await lock_customers(connection, customers, deleting=deleting)
    # Columns, not a session's Identity objects: those hold what the first read saw.
    read = select(Identity.id, Identity.customer_id).where(Identity.id.in_(sides))
    now = dict((await connection.execute(read)).all())
    if found != set(customers) or now != sides:
        raise StaleRead("a record of the review moved to another customer")


async def refuse_if_split_since(
    connection: AsyncConnection, customer_id: uuid.UUID, opened: datetime
) -> None:
    """A review over the identity limit names the candidate customer, not the record
    the new one matched: once an unmerge split that customer (after the review was
    opened), the matched record may be the one that left, and a merge would join the
    new record to the people left behind. ``Conflict`` then: a person merges the record
    by hand with the customer it belongs with (or keeps them apart)."""
    split = select(func.count()).where(
        AuditEntry.customer_id == customer_id,
        AuditEntry.operation == UNMERGE_OPERATION,
        AuditEntry.occurred_at >= opened,
    )
    if await connection.scalar(split):
        raise Conflict(
            "The candidate customer was split after this review was opened, and the review "
            "names none of its records: merge the record with the right customer by hand "
            "(mergeCustomers), or keep them apart",
            field="id",
        )


async def reopen_settled(session: AsyncSession, identity_id: int) -> None:
    """After ``identity_id`` was split off its customer: its reviews that a merge settled
    with no person's decision (status merged, resolved by nobody) are open again where
    their two records are now in different customers, each against the customer its
    candidate record is in. The merge that answered them was undone, so the question is
    back; left settled, no one was ever asked it. A person's decision stands, and so
    does a review over the identity limit (no one record to compare with)."""
    mine = or_(
        IdentityReview.identity_id == identity_id,
        IdentityReview.candidate_identity_id == identity_id,
    )
    settled = list(
        await session.scalars(
            select(IdentityReview).where(
                mine,
                IdentityReview.status == "merged",
                IdentityReview.resolved_by.is_(None),
                IdentityReview.candidate_identity_id.is_not(None),
            )
        )
    )
    if not settled:
        return
    pairs = [(r, r.identity_id, r.candidate_identity_id or 0) for r in settled]
    sides = {side for _, *both in pairs for side in both}
    read = select(Identity.id, Identity.customer_id).where(Identity.id.in_(sides))
    owners = dict((await session.execute(read)).all())
    for review, record, candidate in pairs:
        theirs = owners.get(candidate)
        if theirs is not None and owners.get(record) not in (None, theirs):
            review.status = "open"
            review.candidate_customer_id = theirs
