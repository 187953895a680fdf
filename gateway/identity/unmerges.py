"""Splitting one identity back out of its customer, with what it reported.

A service function for the GraphQL mutation: one transaction, an ``identity_links`` row
for the split and an audit entry (ids only). The identity takes every attribute it
reported and the consent statements made for it (consent_split.py); the suppressions
kept for the address it is given come with it. Events stay, since they do not say which
identity they came from.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.identity_models import IdentityLink, IdentityRecord
from gateway.db.models import UNMERGE_OPERATION, Attribute, AuditEntry, Customer, Identity, utcnow
from gateway.db.retries import DEFAULT_RETRY, RetryPolicy, StaleRead, retry_transaction
from gateway.errors import Conflict, InvalidInput
from gateway.identity.config import DEFAULT_CONFIG, IdentityConfig
from gateway.identity.consent_split import split_consents
from gateway.identity.linkage.resolution import lock_keys, try_lock_keys
from gateway.identity.merges import keep_golden_provenance, refresh_golden
from gateway.identity.review_state import after_split
from gateway.identity.values import (
    dob_key,
    email_parts,
    name_key,
    phone_key,
    postcode_key,
    text_key,
)
from gateway.privacy.consent_owner import MERGE_RULE, latest_link_rule
from gateway.privacy.erasure_scope import linker_keys
from gateway.privacy.suppressions import BOUNCED_EMAIL, EMAIL_STATUS, mailbox

if TYPE_CHECKING:
    from gateway.privacy.suppressions import Suppressions


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

    Every attribute named for that identity moves with it (rows from before attributes
    named one: those its latest record supports), with the hard bounces of the
    addresses it takes, and so do the consent statements made for it (consent_split.py);
    events stay, since they do not say which identity they came from. A customer the
    split gives an address gets what ``suppressions`` kept for it, as one created with it.
    Its own transaction, run again after a deadlock or serialization failure.
    """
    # The keys seen so far: a customer whose records keep changing address (a webhook
    # stream) shows new keys after each attempt's locks; every later attempt holds them
    # all from its start, as an erasure does.
    seen: set[str] = set()
    try:
        return await retry_transaction(
            lambda: _unmerge_once(sessions, source, external_id, config, actor, suppressions, seen),
            "unmerge_customer",
            retry,
        )
    except StaleRead as exc:
        raise Conflict("The customer kept changing during the unmerge; try again") from exc


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
    seen: set[str],
) -> uuid.UUID:
    # The linker's keys of everything the customer is known by, read first and locked
    # before anything else (as the linker and an erasure lock them, and before any row):
    # a linker batch or an ESP batch naming one of them (the address the identity takes)
    # then runs wholly before the split or wholly after it. Without them an ESP batch
    # could withdraw the mailbox from the survivor while the split gave it to the new
    # customer, each reading before the other committed.
    async with sessions() as reading:
        owner_read = await reading.scalar(_owner_of(source, external_id))
        keys = seen | (await linker_keys(reading, owner_read, config) if owner_read else set())
    seen.update(keys)
    async with sessions.begin() as session:
        await lock_keys(await session.connection(), keys)
        identity = await session.scalar(
            select(Identity).where(Identity.source == source, Identity.external_id == external_id)
        )
        if identity is None:
            raise InvalidInput("Unknown identity", field="identity")
        owner = identity.customer_id
        if owner != owner_read:  # moved (an unmerge, a merge) since the read: again
            raise StaleRead("the identity changed customer before the unmerge's locks")
        # Known by more than was read (a webhook committed in between): those keys too,
        # before the row, if no one holds them (tried: taken out of ascending order, a
        # wait could close a cycle with a writer taking its own in order). Nothing of the
        # customer's identities can add one now (their keys are held); a record linked to
        # it by name alone still could, hence rounds.
        extra: set[str] = set()
        for _ in range(_TOP_UPS):
            extra = await linker_keys(session, owner, config) - keys
            seen.update(extra)
            if not extra or not await try_lock_keys(await session.connection(), extra):
                break
            keys |= extra
            extra = set()
        locked = (
            await session.execute(
                select(Customer.email).where(Customer.id == owner).with_for_update()
            )
        ).first()
        # Under the row lock nothing can add to what it is known by (a merge into it or a
        # linker batch writing it holds the row): one last look.
        if not extra and locked is not None:
            extra = await linker_keys(session, owner, config) - keys
            seen.update(extra)
        if extra or locked is None:
            # Still gaining keys, or gone (folded by a merge) since the read: again, on a
            # fresh read (retry_transaction), holding every key seen from the start.
            raise StaleRead("the customer changed before the unmerge's locks")
        owner_email = locked.email
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
        await _move_bounces(session, owner, new, config)
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
        await after_split(session, identity.id)
        await refresh_golden(session, [owner, new], config)
        if suppressions is not None:
            await suppressions.apply_changed(
                await session.connection(), {owner: owner_email, new: None}
            )
        session.add(
            AuditEntry(
                actor=actor,
                operation=UNMERGE_OPERATION,
                customer_id=owner,
                details={"new_customer": str(new), "identity_id": identity.id},
            )
        )
    return new


_TOP_UPS = 3  # rounds of keys a customer gained between the read and the locks


def _owner_of(source: str, external_id: str) -> Select[uuid.UUID]:
    return select(Identity.customer_id).where(
        Identity.source == source, Identity.external_id == external_id
    )


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
    """Move every attribute this identity reported (an address it held before included:
    left with the owner, an unsubscribe or a bounce for it would act on the wrong person).

    Rows stored before attributes named their identity (migration 0028) move when this
    identity's latest record supports them. Either way a value a sibling identity of the
    same source supports too is copied rather than moved, so neither profile loses
    provenance it still has."""
    records = {
        r.identity_id: r
        for r in await session.scalars(
            select(IdentityRecord)
            .join(Identity, Identity.id == IdentityRecord.identity_id)
            .where(Identity.customer_id.in_([owner, new]), Identity.source == identity.source)
        )
    }
    mine = records.get(identity.id)
    others = [r for i, r in records.items() if i != identity.id]
    # Its source's rows, and those of the gateway's own it was named for (the address a
    # merge kept for it as the survivor's).
    rows = await session.scalars(
        select(Attribute).where(
            Attribute.customer_id == owner,
            or_(Attribute.source == identity.source, Attribute.identity_id == identity.id),
        )
    )
    for attribute in rows:
        column = _KEY_COLUMN.get(attribute.name, attribute.name)
        key = None if attribute.value is None else _key(attribute.name, attribute.value, config)
        supported = key is not None and mine is not None and getattr(mine, column, None) == key
        sibling = next(
            (o for o in others if key is not None and getattr(o, column, None) == key), None
        )
        if attribute.identity_id == identity.id:
            if sibling is None:
                attribute.customer_id = new
            else:
                session.add(_copy(attribute, new, identity.id))
                attribute.identity_id = sibling.identity_id
        elif attribute.identity_id is None and supported and sibling is None:
            attribute.customer_id = new
        elif supported:
            # Reported by another identity too (or unknown, and a sibling says it).
            session.add(_copy(attribute, new, identity.id))
    await session.flush()


def _copy(attribute: Attribute, customer_id: uuid.UUID, identity_id: int | None) -> Attribute:
    return Attribute(
        customer_id=customer_id,
        name=attribute.name,
        value=attribute.value,
        source=attribute.source,
        observed_at=attribute.observed_at,
        identity_id=identity_id,
    )


async def _move_bounces(
    session: AsyncSession, owner: uuid.UUID, new: uuid.UUID, config: IdentityConfig
) -> None:
    """The hard bounces of the mailboxes the split took and the owner no longer holds go
    with them, however the ESP wrote the address: they are the split-off person's, and
    left behind they would outlive that person's erasure. A bounce's status moves with
    its last address."""
    emails = select(Attribute.customer_id, Attribute.value).where(
        Attribute.customer_id.in_([owner, new]), Attribute.name == "email"
    )
    held: dict[uuid.UUID, set[str]] = {owner: set(), new: set()}
    for customer, value in await session.execute(emails):
        if value is not None:
            held[customer].add(mailbox(value, config))
    gone = held[new] - held[owner]
    rows = list(
        await session.scalars(
            select(Attribute).where(
                Attribute.customer_id == owner, Attribute.name.in_([BOUNCED_EMAIL, EMAIL_STATUS])
            )
        )
    )
    moved = [
        r for r in rows if r.name == BOUNCED_EMAIL and r.value and mailbox(r.value, config) in gone
    ]
    if not moved:
        return
    for row in moved:
        row.customer_id = new
    taken = {(r.source, r.observed_at) for r in moved}
    kept = {
        (r.source, r.observed_at)
        for r in rows
        if r.name == BOUNCED_EMAIL and r.customer_id == owner
    }
    for status in (r for r in rows if r.name == EMAIL_STATUS):
        when = (status.source, status.observed_at)
        if when not in taken:
            continue
        if when in kept:
            session.add(_copy(status, new, None))
        else:
            status.customer_id = new
    await session.flush()
