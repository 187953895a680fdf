"""What an erasure covers: every identifier a customer was ever known by.

An erasure must tombstone more than the profile shows today: a merge folds another
customer's e-mails, phones and source ids into this one (their attribute rows and
identities move with it), sources report values that never became golden, and
Segment events carry anonymous ids that tie a device's unlinked events to the person.
``known_identifiers`` reads all of that history in the erasure's transaction and
answers the tombstone digests and the lock keys (the linker's, and one per digest,
which an unlinked event naming that identifier takes too).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.access_models import EventSubject
from gateway.db.identity_models import IdentityRecord
from gateway.db.models import Attribute, Customer, Event, Identity
from gateway.identity.config import IdentityConfig
from gateway.identity.linkage.resolution import customer_keys
from gateway.identity.values import email_parts
from gateway.profiles.contact_points import normalize_phone

if TYPE_CHECKING:
    from gateway.privacy.tombstones import Tombstones

__all__ = ["Known", "known_identifiers", "linker_keys", "subject_key"]


@dataclass(frozen=True, slots=True)
class Known:
    """What one customer is known by: for the cache purge, the tombstones, the locks."""

    emails: set[str]
    digests: set[str]  # tombstone digests: e-mails, mailboxes, phones, source and anonymous ids
    keys: set[str]  # lock keys: the linker's, and one per digest (unlinked events')


def subject_key(digest: str) -> str:
    """The lock key of one identifier digest: an unlinked event naming it takes it."""
    return f"subject:{digest}"


async def known_identifiers(
    session: AsyncSession, customer: Customer, tombstones: Tombstones, config: IdentityConfig
) -> Known:
    """Every identifier ``customer`` (identities loaded) was ever known by: the golden
    e-mail and phone, every value a source reported (attributes move with a merge, so
    a merged-in customer's are here), the phones of each identity's latest record, the
    source ids, and the anonymous ids its events carried."""
    emails, phones, keyed = await _reported(session, customer.id, customer.email, customer.phone)
    identities = [(i.source, i.external_id) for i in customer.identities]
    anonymous = set(
        await session.scalars(
            select(EventSubject.digest)
            .join(Event, Event.id == EventSubject.event_id)
            .where(Event.customer_id == customer.id)
        )
    )
    shared = await _held_by_others(session, customer.id, emails, phones)
    mailboxes = {key for key in _mailboxes(emails, keyed, config) if _folds(key, config)}
    mailboxes -= await _mailboxes_of_others(session, customer.id, mailboxes)
    digests = tombstones.digests(emails - shared, identities, phones - shared, mailboxes)
    digests |= anonymous
    keys = _linker_keys(identities, emails, phones, keyed, config)
    keys |= {subject_key(d) for d in digests}
    return Known(emails=emails, digests=digests, keys=keys)


async def linker_keys(
    session: AsyncSession, customer_id: uuid.UUID, config: IdentityConfig
) -> set[str]:
    """The identity linker's lock keys of everything ``customer_id`` is known by (as
    ``known_identifiers`` finds it; none if there is no such customer): what a writer
    that changes who holds those identifiers (an unmerge) locks, so that a linker batch
    or an ESP batch naming one of them runs wholly before or wholly after it. Read with
    Core, not the customer's ORM collections, which such a writer is about to change."""
    golden = (
        await session.execute(
            select(Customer.email, Customer.phone).where(Customer.id == customer_id)
        )
    ).first()
    if golden is None:
        return set()
    emails, phones, keyed = await _reported(session, customer_id, golden.email, golden.phone)
    identities = await session.execute(
        select(Identity.source, Identity.external_id).where(Identity.customer_id == customer_id)
    )
    return _linker_keys([(s, e) for s, e in identities], emails, phones, keyed, config)


async def _reported(
    session: AsyncSession, customer_id: uuid.UUID, email: str | None, phone: str | None
) -> tuple[set[str], set[str], set[str]]:
    """The e-mails and phones a customer holds or was ever reported with (its golden
    ``email`` and ``phone``, every such attribute, the phones of its identities' latest
    records), and the email keys those records are linked by: as stored, so a key still
    counts when its address is no attribute any more or was folded by other settings."""
    values: dict[str, set[str]] = {"email": set(), "phone": set()}
    for name, value in await session.execute(
        select(Attribute.name, Attribute.value).where(
            Attribute.customer_id == customer_id, Attribute.name.in_(values)
        )
    ):
        if value:
            values[name].add(value)
    email_keys: set[str] = set()
    for number, email_key in await session.execute(
        select(IdentityRecord.phone, IdentityRecord.email_key)
        .join(Identity, Identity.id == IdentityRecord.identity_id)
        .where(Identity.customer_id == customer_id)
    ):
        if number:
            values["phone"].add(number)
        if email_key:
            email_keys.add(email_key)
    emails = values["email"] | ({email} if email else set())
    phones = values["phone"] | ({phone} if phone else set())
    return emails, phones, email_keys


async def _held_by_others(
    session: AsyncSession, customer_id: uuid.UUID, emails: set[str], phones: set[str]
) -> set[str]:
    """The e-mails and phones another customer holds too (a shared family address or
    landline): they are that customer's as well, and a tombstone would lock them out."""
    held: set[str | None] = set()
    for column, wanted in ((Customer.email, emails), (Customer.phone, phones)):
        if wanted:
            held.update(
                await session.scalars(
                    select(column).where(column.in_(wanted), Customer.id != customer_id)
                )
            )
    if emails or phones:
        held.update(
            await session.scalars(
                select(Attribute.value).where(
                    Attribute.name.in_(["email", "phone"]),
                    Attribute.value.in_(emails | phones),
                    Attribute.customer_id != customer_id,
                )
            )
        )
    return {value for value in held if value}


async def _mailboxes_of_others(
    session: AsyncSession, customer_id: uuid.UUID, mailboxes: set[str]
) -> set[str]:
    """The mailboxes another customer holds too, under any spelling (its address, its
    folded key, a record of one of its identities): a mailbox tombstone would lock them
    out (two customers a steward kept apart may share one)."""
    if not mailboxes:
        return set()
    held: set[str | None] = set()
    for column in (Customer.email, Customer.email_key):
        held.update(
            await session.scalars(
                select(column).where(column.in_(mailboxes), Customer.id != customer_id)
            )
        )
    held.update(
        await session.scalars(
            select(IdentityRecord.email_key)
            .join(Identity, Identity.id == IdentityRecord.identity_id)
            .where(IdentityRecord.email_key.in_(mailboxes), Identity.customer_id != customer_id)
        )
    )
    return {key for key in held if key}


def _folds(key: str, config: IdentityConfig) -> bool:
    """Whether another spelling reaches the mailbox ``key`` (a provider that ignores dots
    or plus tags, or has aliases): only those need a tombstone of their own, an
    address elsewhere being its exact spelling's."""
    domain = key.rpartition("@")[2]
    return (
        domain in config.dotless_email_domains
        or domain in config.plus_tag_email_domains
        or domain in config.email_domain_aliases.values()
    )


def _mailboxes(emails: set[str], email_keys: set[str], config: IdentityConfig) -> set[str]:
    """The matching keys of these addresses (``email_parts``) and the records' stored
    ``email_keys``: every mailbox the customer was known by, however it was spelt."""
    found = set(email_keys)
    for email in emails:
        try:
            key = email_parts(email, config)[1]
        except ValueError:
            continue  # not an address: the linker never keyed anyone by it
        if key:
            found.add(key)
    return found


def _linker_keys(
    identities: list[tuple[str, str]],
    emails: set[str],
    phones: set[str],
    email_keys: set[str],
    config: IdentityConfig,
) -> set[str]:
    """The keys the identity linker locks for records naming these identifiers (and
    these records' stored ``email_keys``)."""
    email_keys = _mailboxes(emails, email_keys, config)
    e164 = set()
    for phone in phones:
        try:
            e164.add(normalize_phone(phone))
        except ValueError:
            continue  # not a number: the linker never keyed anyone by it
    return set(customer_keys(identities, email_keys, e164))
