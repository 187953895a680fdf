"""Merging two customers by hand, with evidence, and recomputing golden values.

A service function for the GraphQL mutation: one transaction, an ``identity_links`` row
per identity it moves and an audit entry (ids only). Splitting back out: unmerges.py.
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import Integer, delete, exists, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.identity_models import IdentityLink, IdentityReview
from gateway.db.locks import lock_customers
from gateway.db.models import (
    MERGE_OPERATION,
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
from gateway.db.retries import DEFAULT_RETRY, RetryPolicy, retry_transaction
from gateway.errors import Conflict, InvalidInput
from gateway.identity.config import DEFAULT_CONFIG, IdentityConfig
from gateway.identity.observations import (
    drop_shared_observations,
    golden_observations,
)
from gateway.identity.survivorship import Observation, golden_values
from gateway.identity.values import folded_email
from gateway.privacy.consent_owner import MERGE_RULE, sole_identities


async def merge_customers(
    sessions: async_sessionmaker[AsyncSession],
    a: uuid.UUID,
    b: uuid.UUID,
    reason: str,
    *,
    config: IdentityConfig = DEFAULT_CONFIG,
    actor: str = "system",
    retry: RetryPolicy = DEFAULT_RETRY,
) -> uuid.UUID:
    """Fold customer ``b`` into ``a`` (identities, attributes, consents, events); returns ``a``.

    Its own transaction, run again after a deadlock or serialization failure (``retry``)."""

    async def attempt() -> uuid.UUID:
        async with sessions.begin() as session:
            return await merge_in(session, a, b, reason, config=config, actor=actor)

    return await retry_transaction(attempt, "merge_customers", retry)


async def merge_in(
    session: AsyncSession,
    a: uuid.UUID,
    b: uuid.UUID,
    reason: str,
    *,
    config: IdentityConfig = DEFAULT_CONFIG,
    actor: str = "system",
) -> uuid.UUID:
    """``merge_customers`` inside the caller's transaction (a resolved review's)."""
    if a == b:
        raise InvalidInput("Cannot merge a customer with itself", field="b")
    # Both rows, in id order whichever is kept: A+B and B+A at once queue, never deadlock.
    found = await lock_customers(await session.connection(), (a, b), deleting=True)
    if found != {a, b}:
        raise InvalidInput("Unknown customer id", field="a" if a not in found else "b")
    moved = list(await session.scalars(select(Identity.id).where(Identity.customer_id == b)))
    kept = list(await session.scalars(select(Identity.id).where(Identity.customer_id == a)))
    if len(moved) + len(kept) > config.max_identities_per_customer:
        raise Conflict(
            f"A merged customer would have more than "
            f"{config.max_identities_per_customer} identities",
            field="b",
        )
    await keep_golden_provenance(session, [a, b])
    kept_email = await session.scalar(select(Customer.email).where(Customer.id == a))
    survivor = (await sole_identities(await session.connection(), [a])).get(a)
    await _move_consents(session, a, b)
    await drop_shared_observations(session, b, a)
    for model in (Identity, Attribute, Event, IdentityLink, *SERVED):
        await session.execute(update(model).where(model.customer_id == b).values(customer_id=a))
    # Open reviews between the two are settled by this merge (a person's decision, kept
    # apart, stays as it was); the rest now point at a.
    await session.execute(
        update(IdentityReview)
        .where(
            IdentityReview.status == "open",
            IdentityReview.candidate_customer_id.in_([a, b]),
            IdentityReview.identity_id.in_(moved + kept),
        )
        .values(status="merged")
    )
    await session.execute(
        update(IdentityReview)
        .where(IdentityReview.candidate_customer_id == b)
        .values(candidate_customer_id=a)
    )
    now = utcnow()
    if moved:
        await session.execute(
            insert(IdentityLink),
            [
                {
                    "customer_id": a,
                    "identity_id": identity_id,
                    "matched_identity_id": kept[0] if kept else None,
                    "rule": MERGE_RULE,
                    "score": None,
                    "reason": reason[:200],
                    "created_at": now,
                }
                for identity_id in moved
            ],
        )
    await session.execute(delete(Customer).where(Customer.id == b))
    if kept_email is not None:
        # The survivor the caller chose keeps its address, as the newest observation (a
        # configured source_priority still ranks it): otherwise ``b``'s newer one took
        # its place and looking the survivor up by its own address found nobody. Named
        # for the identity the survivor is alone, if so: splitting it off takes it.
        session.add(
            Attribute(
                customer_id=a,
                name="email",
                value=kept_email,
                source=MERGE_SOURCE,
                identity_id=survivor,
            )
        )
        await session.flush()
    await refresh_golden(session, [a], config)
    session.add(
        AuditEntry(
            actor=actor,
            operation=MERGE_OPERATION,
            customer_id=a,
            details={"merged": str(b), "identities": len(moved)},
        )
    )
    return a


# The source of a golden value kept from before every write path recorded provenance
# (migration 0007 backfills the same).
PROFILE_SOURCE = "profile"
# The source of the survivor's own address, observed again by the merge that kept it.
MERGE_SOURCE = "merge"


async def keep_golden_provenance(session: AsyncSession, customer_ids: list[uuid.UUID]) -> None:
    """Give a golden e-mail or phone that has no attribute row one, before golden values
    are recomputed from attribute rows: otherwise the merge drops it, and the erasure
    that follows never tombstones it. Named for the customer's identity when it is that
    one identity alone (``sole_identities``: not one a merge brought in, whose person
    the value may not be), so an unmerge of that identity takes it."""
    sole = await sole_identities(await session.connection(), customer_ids)
    for customer_id, name in itertools.product(customer_ids, ("email", "phone")):
        column = getattr(Customer, name)
        missing = select(
            Customer.id,
            literal(name),
            column,
            literal(PROFILE_SOURCE),
            Customer.updated_at,
            literal(sole.get(customer_id), Integer),
        ).where(
            Customer.id == customer_id,
            column.is_not(None),
            ~exists().where(
                Attribute.customer_id == Customer.id,
                Attribute.name == name,
                Attribute.value == column,
            ),
        )
        await session.execute(
            insert(Attribute).from_select(
                ["customer_id", "name", "value", "source", "observed_at", "identity_id"], missing
            )
        )


async def _move_consents(session: AsyncSession, a: uuid.UUID, b: uuid.UUID) -> None:
    """One consent per purpose survives: the most recently recorded of the two; of two
    made at the same instant, a withdrawal (the merged-in customer's "no" lost to the
    survivor's "yes" of the same time: a tie errs to suppression, as statements do)."""
    mine = {
        c.purpose: c for c in await session.scalars(select(Consent).where(Consent.customer_id == a))
    }
    for theirs in await session.scalars(select(Consent).where(Consent.customer_id == b)):
        own = mine.get(theirs.purpose)
        if own is not None and (own.recorded_at, not own.granted) < (
            theirs.recorded_at,
            not theirs.granted,
        ):
            own.granted, own.source, own.recorded_at = (
                theirs.granted,
                theirs.source,
                theirs.recorded_at,
            )
        if own is not None:
            await session.delete(theirs)
        else:
            theirs.customer_id = a
    # Every statement either record made stays in the history, now the survivor's.
    await session.execute(
        update(ConsentChange).where(ConsentChange.customer_id == b).values(customer_id=a)
    )
    await session.flush()


async def refresh_golden(
    session: AsyncSession, customer_ids: Iterable[uuid.UUID], config: IdentityConfig
) -> None:
    """Recompute the golden values of these customers from their attributes."""
    ids = list(customer_ids)
    observations: defaultdict[uuid.UUID, list[Observation]] = defaultdict(list)
    await golden_observations(session, Attribute.customer_id.in_(ids), observations)
    emails = {o.value for group in observations.values() for o in group if o.name == "email"}
    held = await session.execute(
        select(Customer.email, Customer.id).where(
            Customer.email.in_(emails), Customer.id.not_in(ids)
        )
    )
    owners: dict[str, uuid.UUID] = {email: owner for email, owner in held if email}
    # Release the emails first: the unique index would otherwise see two holders mid-update.
    await session.execute(update(Customer).where(Customer.id.in_(ids)).values(email=None))
    for owner in ids:
        golden = golden_values(owner, observations[owner], config, owners)
        if golden["email"]:
            owners[golden["email"]] = owner
        await session.execute(
            update(Customer)
            .where(Customer.id == owner)
            .values(**golden, email_key=folded_email(golden["email"], config), updated_at=utcnow())
        )
