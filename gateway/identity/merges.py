"""Merging two customers by hand and splitting an identity back out, with evidence.

Both are service functions for the GraphQL mutations; each runs in one transaction,
writes an ``identity_links`` row per identity it moves and an audit entry (ids only).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import delete, exists, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.identity_models import IdentityLink, IdentityRecord, IdentityReview
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
from gateway.identity.consent_split import split_consents
from gateway.identity.observations import drop_shared_observations, golden_observations
from gateway.identity.survivorship import Observation, golden_values
from gateway.identity.values import (
    dob_key,
    email_parts,
    name_key,
    phone_key,
    postcode_key,
    text_key,
)
from gateway.privacy.consent_owner import MERGE_RULE, latest_link_rule

if TYPE_CHECKING:
    from gateway.privacy.suppressions import Suppressions


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
    await _move_consents(session, a, b)
    await drop_shared_observations(session, b, a)
    for model in (Identity, Attribute, Event, IdentityLink, *SERVED):
        await session.execute(update(model).where(model.customer_id == b).values(customer_id=a))
    # Open reviews between the two are settled by this merge; the rest now point at a.
    await session.execute(
        update(IdentityReview)
        .where(
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
        # its place and looking the survivor up by its own address found nobody.
        session.add(Attribute(customer_id=a, name="email", value=kept_email, source=MERGE_SOURCE))
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
    that follows never tombstones it."""
    for name in ("email", "phone"):
        column = getattr(Customer, name)
        missing = select(
            Customer.id, literal(name), column, literal(PROFILE_SOURCE), Customer.updated_at
        ).where(
            Customer.id.in_(customer_ids),
            column.is_not(None),
            ~exists().where(
                Attribute.customer_id == Customer.id,
                Attribute.name == name,
                Attribute.value == column,
            ),
        )
        await session.execute(
            insert(Attribute).from_select(
                ["customer_id", "name", "value", "source", "observed_at"], missing
            )
        )


async def _move_consents(session: AsyncSession, a: uuid.UUID, b: uuid.UUID) -> None:
    """One consent per purpose survives: the most recently recorded of the two."""
    mine = {
        c.purpose: c for c in await session.scalars(select(Consent).where(Consent.customer_id == a))
    }
    for theirs in await session.scalars(select(Consent).where(Consent.customer_id == b)):
        own = mine.get(theirs.purpose)
        if own is not None and own.recorded_at < theirs.recorded_at:
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


async def unmerge_customer(
    sessions: async_sessionmaker[AsyncSession],
    source: str,
    external_id: str,
    *,
    config: IdentityConfig = DEFAULT_CONFIG,
    actor: str = "system",
    retry: RetryPolicy = DEFAULT_RETRY,
    suppressions: Suppressions | None = None,
) -> uuid.UUID:
    """Split one identity out of its customer into a profile of its own; returns the new id.

    The attributes that identity's source reported and its latest record supports move
    with it, and so do the consent statements made for it (consent_split.py); events
    stay, since they do not say which identity they came from. A customer the split
    gives an address gets what ``suppressions`` kept for it, as one created with it.
    Its own transaction, run again after a deadlock or serialization failure.
    """
    return await retry_transaction(
        lambda: _unmerge_once(sessions, source, external_id, config, actor, suppressions),
        "unmerge_customer",
        retry,
    )


async def _merged_in(session: AsyncSession, identity_id: int, owner: uuid.UUID) -> bool:
    """Whether a merge brought ``identity_id`` into ``owner`` (its latest link is the
    merge's): then it can be split off even when it is the only identity (the survivor
    had none, as a customer the API created by address alone), leaving it none again."""
    rule = await session.scalar(select(latest_link_rule(identity_id, owner)))
    return rule == MERGE_RULE


async def _unmerge_once(
    sessions: async_sessionmaker[AsyncSession],
    source: str,
    external_id: str,
    config: IdentityConfig,
    actor: str,
    suppressions: Suppressions | None,
) -> uuid.UUID:
    async with sessions.begin() as session:
        identity = await session.scalar(
            select(Identity).where(Identity.source == source, Identity.external_id == external_id)
        )
        if identity is None:
            raise InvalidInput("Unknown identity", field="identity")
        owner = identity.customer_id
        owner_email = await session.scalar(
            select(Customer.email).where(Customer.id == owner).with_for_update()
        )
        siblings = int(
            await session.scalar(
                select(func.count()).select_from(Identity).where(Identity.customer_id == owner)
            )
            or 0
        )
        if siblings < 2 and not await _merged_in(session, identity.id, owner):
            raise InvalidInput("The identity is already a customer of its own", field="identity")
        await keep_golden_provenance(session, [owner])
        new = uuid.uuid4()
        now = utcnow()
        session.add(Customer(id=new, created_at=now, updated_at=now))
        await session.flush()
        identity.customer_id = new
        await _move_attributes(session, identity, owner, new, config)
        await split_consents(session, identity, owner, new)
        await session.execute(
            update(IdentityLink)
            .where(IdentityLink.identity_id == identity.id)
            .values(customer_id=new)
        )
        session.add(
            IdentityLink(
                customer_id=new,
                identity_id=identity.id,
                rule="unmerge",
                reason=f"split from {owner}",
                created_at=now,
            )
        )
        await session.flush()
        await refresh_golden(session, [owner, new], config)
        if suppressions is not None:
            await suppressions.apply_changed(
                await session.connection(), {owner: owner_email, new: None}
            )
        session.add(
            AuditEntry(
                actor=actor,
                operation="unmerge_customer",
                customer_id=owner,
                details={"new_customer": str(new), "identity_id": identity.id},
            )
        )
    return new


def _key(name: str, value: str, config: IdentityConfig) -> str | None:
    try:
        match name:
            case "email":
                return email_parts(value, config)[1]
            case "phone":
                return phone_key(value, config)
            case "first_name" | "last_name":
                return name_key(value, config)
            case "date_of_birth":
                return dob_key(value, config)
            case "postcode":
                return postcode_key(value, config)
            case _:
                return text_key(value, config)
    except ValueError:
        return None


_KEY_COLUMN = {"email": "email_key"}


async def _move_attributes(
    session: AsyncSession,
    identity: Identity,
    owner: uuid.UUID,
    new: uuid.UUID,
    config: IdentityConfig,
) -> None:
    """Move the attributes this identity's record supports; copy those a sibling identity of
    the same source supports too, so neither profile loses provenance it still has."""
    records = {
        r.identity_id: r
        for r in await session.scalars(
            select(IdentityRecord)
            .join(Identity, Identity.id == IdentityRecord.identity_id)
            .where(Identity.customer_id.in_([owner, new]), Identity.source == identity.source)
        )
    }
    mine = records.get(identity.id)
    if mine is None:
        return
    others = [r for i, r in records.items() if i != identity.id]
    rows = await session.scalars(
        select(Attribute).where(Attribute.customer_id == owner, Attribute.source == identity.source)
    )
    for attribute in rows:
        if attribute.value is None:
            continue
        column = _KEY_COLUMN.get(attribute.name, attribute.name)
        key = _key(attribute.name, attribute.value, config)
        if key is None or getattr(mine, column, None) != key:
            continue
        if any(getattr(other, column, None) == key for other in others):
            session.add(
                Attribute(
                    customer_id=new,
                    name=attribute.name,
                    value=attribute.value,
                    source=attribute.source,
                    observed_at=attribute.observed_at,
                )
            )
        else:
            attribute.customer_id = new
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
            update(Customer).where(Customer.id == owner).values(**golden, updated_at=utcnow())
        )
