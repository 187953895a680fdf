"""Withdrawals of email marketing for addresses no customer has yet.

An ESP reports an unsubscribe, a group unsubscribe or a spam report for whoever it
mailed, and that may be an address the gateway has no customer for (a list imported
into the ESP first, a customer erased and the address kept by the ESP). Acknowledging
it and forgetting it meant that the customer created later with that address (an
import, a webhook, the stream, ``upsertCustomer``) was mailed again.

``keep`` stores the withdrawal under the address's keyed hash (the tombstones' digest:
no address is kept for someone who is not a customer) with its source and the time it
arrived; the newest statement per address stands. ``Suppressions.apply``, called where
customers are created in the same transaction, gives each new customer whose address
has one the withdrawal as a consent statement of its own source and time, so
``suppressed`` is true from the start, and a later opt-in (a newer statement) outranks
it as it outranks any withdrawal.

A stored customer who takes the address on later (a source's record now carries it: an
email change, an import or a merge giving them the address) gets it the same way, in
the linker's batch that gives it to them, unless their own statement is newer.

Races: the ESP batch holds the linker's key stripe of such an address (shared) while it
looks the recipient up and keeps the withdrawal, and the creating writer holds it
(exclusively) from before its lookup to its commit, so either the batch sees the new
customer (and withdraws their consent) or the creator sees the suppression.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.access_models import EmailSuppression
from gateway.db.bulk import custom_plans, matching
from gateway.db.models import Consent, as_utc, utcnow
from gateway.privacy.consent import Purpose, withdraw_many

if TYPE_CHECKING:
    from gateway.privacy.erasure import Tombstones


async def keep(connection: AsyncConnection, statements: Mapping[str, str]) -> None:
    """Keep withdrawals made now (email digest -> source), each replacing only an older
    one for the same address."""
    if not statements:
        return
    now = utcnow()
    rows = [
        {"digest": digest, "source": source[:64], "recorded_at": now}
        for digest, source in sorted(statements.items())  # one lock order for everyone
    ]
    dialect_insert = postgres_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(EmailSuppression).values(rows)
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=["digest"],
            set_={"source": statement.excluded.source, "recorded_at": now},
            where=EmailSuppression.recorded_at <= statement.excluded.recorded_at,
        )
    )


class Suppressions:
    """What a writer giving customers addresses asks: do they carry a withdrawal?"""

    def __init__(self, tombstones: Tombstones) -> None:
        self._tombstones = tombstones

    async def apply(
        self,
        connection: AsyncConnection,
        acquired: Iterable[tuple[uuid.UUID, str | None]],
    ) -> set[uuid.UUID]:
        """Give each customer the withdrawal kept for any of the addresses they just
        acquired (``(customer, address)`` pairs: a customer created with it, or a stored
        one whose record now carries it; the newest when several have one), with its
        source and time, unless their email-marketing statement is as new or newer (an
        opt-in made after the withdrawal stands; the same withdrawal is not recorded
        twice when the address is seen again); the customers that got one."""
        owners: dict[str, set[uuid.UUID]] = {}
        for customer, email in acquired:
            digest = self._tombstones.email_digest(email)
            if digest is not None:
                owners.setdefault(digest, set()).add(customer)
        if not owners:
            return set()
        found: dict[uuid.UUID, tuple[datetime, str]] = {}
        # An import's batch asks about thousands of addresses: planned for them.
        async with custom_plans(connection):
            for clause in matching(connection, EmailSuppression.digest, owners):
                rows = await connection.execute(
                    select(
                        EmailSuppression.digest,
                        EmailSuppression.recorded_at,
                        EmailSuppression.source,
                    ).where(clause)
                )
                for digest, recorded_at, source in rows:
                    for customer in owners[digest]:
                        stated = (as_utc(recorded_at), source)
                        found[customer] = max(found.get(customer, stated), stated)
            if found:
                for customer, stated_at in (await _statement_times(connection, found)).items():
                    if stated_at >= found[customer][0]:
                        del found[customer]
        if found:
            await withdraw_many(
                connection,
                Purpose.EMAIL_MARKETING,
                {customer: source for customer, (_, source) in found.items()},
                {customer: recorded_at for customer, (recorded_at, _) in found.items()},
            )
        return set(found)


async def _statement_times(
    connection: AsyncConnection, customers: Iterable[uuid.UUID]
) -> dict[uuid.UUID, datetime]:
    """When each of these customers' current email-marketing statement was made."""
    times: dict[uuid.UUID, datetime] = {}
    for clause in matching(connection, Consent.customer_id, customers):
        rows = await connection.execute(
            select(Consent.customer_id, Consent.recorded_at).where(
                clause, Consent.purpose == Purpose.EMAIL_MARKETING.value
            )
        )
        for customer, recorded_at in rows:
            times[customer] = as_utc(recorded_at)
    return times
