"""Whether a review still describes its two records, at the moment it is resolved, and
what an unmerge reopens.

A review names two stored records (or, over the identity limit, a record and a
customer). Merges, unmerges and the linker move records between customers while a
person reads the pair and decides: the resolution acts on where the records are when it
commits, never on where they were when the page was read (reviews.py), and a review
whose answer an unmerge took back is asked again (``after_split``).
"""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from gateway.db.identity_models import IdentityRecord, IdentityReview
from gateway.db.locks import lock_customers
from gateway.db.models import Customer, Identity
from gateway.db.retries import StaleRead
from gateway.errors import Conflict


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


async def still_matched(
    connection: AsyncConnection, record_identity: int, customer_id: uuid.UUID
) -> None:
    """A review over the identity limit names the candidate customer, not a record of
    it: the linker matched the new record to whoever held its address or phone. Once an
    unmerge split the holder off (with the address), the customer left is someone the
    record shares nothing with, and a merge would join the record to the wrong person.
    ``Conflict`` then, unless ``customer_id`` still holds the record's address or phone
    (an identity's record, or its own golden values; read under the customer's lock): a
    person merges the record by hand with the customer it belongs with, or keeps them
    apart."""
    keys = (
        await connection.execute(
            select(IdentityRecord.email_key, IdentityRecord.phone).where(
                IdentityRecord.identity_id == record_identity
            )
        )
    ).first()
    email_key, phone = keys if keys is not None else (None, None)
    members = IdentityRecord.identity_id.in_(
        select(Identity.id).where(Identity.customer_id == customer_id)
    )
    golden = (
        await connection.execute(
            select(Customer.email, Customer.email_key, Customer.phone).where(
                Customer.id == customer_id
            )
        )
    ).first()
    address, folded, number = golden if golden is not None else (None, None, None)
    # As the linker matched (linker._by_key): the address's key held by a record of the
    # customer, or its golden address (written plainly, or folded: ``email_key``) ...
    found = bool(email_key) and (
        email_key in (address, folded)
        or bool(await _any(connection, members, IdentityRecord.email_key == email_key))
    )
    if not found and phone:
        # ... or the phone, unless the record has an address the customer never had
        # (a shared phone with another address is a household, not the same person).
        known = (address or folded) or await _any(
            connection, members, IdentityRecord.email_key.is_not(None)
        )
        found = (
            number == phone or await _any(connection, members, IdentityRecord.phone == phone)
        ) and not (email_key and known)
    if not found:
        raise Conflict(
            "The candidate customer no longer holds the address or phone this record was "
            "matched by (an identity was split off since): merge the record with the right "
            "customer by hand (mergeCustomers), or keep them apart",
            field="id",
        )


async def after_split(session: AsyncSession, identity_id: int) -> None:
    """After ``identity_id`` was split off its customer: the open reviews that compared
    a record with it name the customer it is in now; and its reviews that a merge
    settled with no person's decision (status merged, resolved by nobody) are open
    again where their two records are now in different customers. The merge that
    answered them was undone, so the question is back; left settled, no one was ever
    asked it. A person's decision stands (a record a person merged stays where it went:
    split it off too if it belongs with this one), and so does a review over the
    identity limit (no one record to compare with)."""
    customer = select(Identity.customer_id).where(Identity.id == identity_id).scalar_subquery()
    await session.execute(
        update(IdentityReview)
        .where(IdentityReview.candidate_identity_id == identity_id, IdentityReview.status == "open")
        .values(candidate_customer_id=customer)
    )
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
    pairs = [(r, r.identity_id, r.candidate_identity_id) for r in settled]
    sides = {side for _, record, candidate in pairs for side in (record, candidate) if side}
    read = select(Identity.id, Identity.customer_id).where(Identity.id.in_(sides))
    owners = dict((await session.execute(read)).all())
    for review, record, candidate in pairs:
        theirs = owners.get(candidate) if candidate is not None else None
        if theirs is not None and owners.get(record) not in (None, theirs):
            review.status = "open"
            review.candidate_customer_id = theirs


async def _any(connection: AsyncConnection, *conditions: ColumnElement[bool]) -> bool:
    """Whether an identity record meets ``conditions``."""
    query = select(exists().where(*conditions).select_from(IdentityRecord))
    return bool(await connection.scalar(query))
