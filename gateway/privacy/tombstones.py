"""Tombstones: what an erasure leaves of a person, keyed hashes of every identifier
they had, and the check every write path makes against them (gateway/privacy/erasure.py
says who writes them and when)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from gateway.db.access_models import Tombstone
from gateway.db.bulk import matching
from gateway.identity.records import PreparedRecord
from gateway.profiles.contact_points import normalize_email, normalize_phone
from gateway.settings import Settings


class Tombstones:
    """Keyed hashes of erased identifiers, and the check every write path makes."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        # Keyed once, copied per digest: ``hmac.new`` per value was half the parse time
        # of a stream event (two digests each, thousands a second).
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    @classmethod
    def from_settings(cls, settings: Settings) -> Tombstones:
        return cls(settings.erasure_key.get_secret_value().encode())

    def of_record(self, record: PreparedRecord) -> set[str]:
        """The digests of what a source record would link by (its email, its mailbox,
        phone and source id), and of the email and phone it gave even where they are
        placeholders that link nothing: an erased ``email@shop.example`` still refuses
        the record."""
        return self.digests(
            [record.values.get("email"), record.given_email],
            [(record.source, record.external_id)],
            [record.phone, record.given_phone],
            [record.email_key],
        )

    def digest(self, kind: str, value: str) -> str:
        mac = self._keyed.copy()
        mac.update(f"{kind}:{value}".encode())
        return mac.hexdigest()

    def digester(self, kind: str) -> Callable[[str], str]:
        """``digest`` of one kind for many values (an export's column): the key and the
        kind hashed once, each value then costs one copy of that state."""
        prefixed = self._keyed.copy()
        prefixed.update(f"{kind}:".encode())

        def one(value: str) -> str:
            mac = prefixed.copy()
            mac.update(value.encode())
            return mac.hexdigest()

        return one

    def email_digest(self, raw: str | None) -> str | None:
        """None for what is not an address: it cannot identify anyone by email."""
        if not raw or "@" not in raw:  # none is an address (and refused without parsing)
            return None
        try:
            return self.digest("email", normalize_email(raw))
        except ValueError:
            return None

    def phone_digest(self, raw: str | None) -> str | None:
        """Over the E.164 form; None for what is not a phone number."""
        try:
            return self.digest("phone", normalize_phone(raw)) if raw else None
        except ValueError:
            return None

    def mailbox_digest(self, email_key: str | None) -> str | None:
        """Over an address's matching key (``email_parts``: a provider's dots, plus tag
        and domain alias folded, as the linker folds them): one mailbox however it is
        spelt. ``jane.doe@gmail.com`` erased, ``janedoe+news@googlemail.com`` reaches
        the same person and is refused too (by its exact digest alone, it was not). A
        kind of its own: hashed as an address, the tombstone of ``bob@gmail.com`` erased
        refused another customer's ``b.o.b+work@gmail.com`` although that mailbox was
        theirs too and kept no mailbox tombstone (a fresh review)."""
        return self.digest("mailbox", email_key) if email_key else None

    def anonymous_digest(self, source: str, anonymous_id: str) -> str:
        """A device's or browser's id in a source (Segment's ``anonymousId``)."""
        return self.digest("anonymous", f"{source}:{anonymous_id}")

    def digests(
        self,
        emails: Iterable[str | None],
        identities: Iterable[tuple[str, str]],
        phones: Iterable[str | None] = (),
        mailboxes: Iterable[str | None] = (),
    ) -> set[str]:
        found = {d for e in emails if (d := self.email_digest(e))}
        found |= {d for p in phones if (d := self.phone_digest(p))}
        found |= {d for k in mailboxes if (d := self.mailbox_digest(k))}
        for source, external_id in identities:
            found.add(self.digest("id", f"{source}:{external_id}"))
        return found

    async def blocked(
        self, executor: AsyncSession | AsyncConnection, digests: set[str]
    ) -> set[str]:
        """Which of these digests belong to erased customers. A bulk batch brings
        thousands: one array parameter on Postgres (an IN list that long costs more to
        bind and plan than to run), slices of an IN list elsewhere."""
        connection = (
            executor if isinstance(executor, AsyncConnection) else await executor.connection()
        )
        found: set[str] = set()
        for clause in matching(connection, Tombstone.digest, digests):
            found.update(await connection.scalars(select(Tombstone.digest).where(clause)))
        return found

    async def unblocked(
        self,
        connection: AsyncConnection,
        records: Sequence[PreparedRecord],
        digests: Sequence[set[str]] | None = None,
    ) -> list[PreparedRecord]:
        """The records none of whose identifiers is an erased customer's, in order: one
        lookup for the batch.  ``digests`` are ``of_record`` of each record, in order, when
        the caller hashed them already.  A ``Screen`` for ``Resolver.link_screened``: run
        under the batch's key locks, it cannot miss an erasure committing meanwhile."""
        own = digests if digests is not None else [self.of_record(r) for r in records]
        blocked = await self.blocked(connection, set().union(*own))
        if not blocked:
            return list(records)
        return [record for record, mine in zip(records, own, strict=True) if not mine & blocked]
