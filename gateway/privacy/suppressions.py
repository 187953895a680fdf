"""What an ESP said of addresses no customer has yet (withdrawals and hard bounces), and
of every address that hard-bounced, whoever had it.

An ESP reports an unsubscribe, a group unsubscribe, a spam report or a hard bounce for
whoever it mailed, and that may be an address the gateway has no customer for (a list
imported into the ESP first, a customer erased and the address kept by the ESP).
Acknowledging it and forgetting it meant that the customer created later with that
address (an import, a webhook, the stream, ``upsertCustomer``) was mailed again.

``keep`` stores the statement under the keyed hash (the tombstones' digest: no address
is kept for someone who is not a customer) of the address's mailbox (``mailbox``: its
matching key, so ``jane.doe+news@gmail.com`` reaches whoever takes
``janedoe@gmail.com``) with its kind (``withdraw`` or ``undeliverable``), its source and
the time the ESP gives it (bounded to now); the newest per address and kind stands.
``Suppressions.apply``, called where customers are created in the same transaction,
gives each new customer whose address has one the withdrawal as a consent statement of
its own source and time, so ``suppressed`` is true from the start, and a later opt-in (a
newer statement) outranks it as it outranks any withdrawal; and the bounce as an
``email_status`` observation ``undeliverable`` of its source and time with the address
it was for (``bounced_email``), as a bounce for a stored customer is recorded.

A bounce is a fact about the address, so one for a stored customer is kept too: when
they move to another address they are mailable there (gateway/segments/fields.py), and
whoever takes the bounced address on next (another customer, or they again under
another spelling of the mailbox) gets the bounce with it.

A stored customer who takes the address on later (a source's record now carries it: an
email change, an import, a merge or fold giving them the address, an unmerge splitting
them off with it) gets it the same way, in the transaction that gives it to them,
unless their own statement is newer.

Races: the ESP batch holds the linker's key stripe of such an address (shared) while it
looks the recipient up and keeps the statement, and the creating writer holds it
(exclusively) from before its lookup to its commit, so either the batch sees the new
customer (and withdraws their consent) or the creator sees the suppression.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.access_models import EmailSuppression
from gateway.db.bulk import custom_plans, matching
from gateway.db.models import Consent, Customer, as_utc
from gateway.identity.config import DEFAULT_CONFIG, IdentityConfig
from gateway.identity.observations import ObservationRow, insert_observations
from gateway.identity.values import email_parts
from gateway.privacy.consent import Purpose, withdraw_many
from gateway.profiles.contact_points import normalize_email

if TYPE_CHECKING:
    from gateway.privacy.tombstones import Tombstones


# What an ESP's statement for an address does: withdraw email marketing, or (a hard
# bounce) mark the address undeliverable.
Kind = Literal["withdraw", "undeliverable"]
EMAIL_STATUS = "email_status"  # the attribute a hard bounce sets
UNDELIVERABLE = "undeliverable"
# A bounce is a fact about an address, not a person: beside each ``email_status``
# observation ``undeliverable`` the address it was for, observed with the same source
# and time (gateway/segments/fields.py holds a customer undeliverable only while their
# address is one of these).
BOUNCED_EMAIL = "bounced_email"


def bounce_rows(
    customer: uuid.UUID, addresses: Iterable[str], source: str, at: datetime
) -> list[ObservationRow]:
    """A hard bounce of ``addresses`` (one mailbox, as the customer holds it) observed
    for ``customer``: the status, and each address it was for."""
    return [
        (customer, EMAIL_STATUS, UNDELIVERABLE, source, at, None),
        *(
            (customer, BOUNCED_EMAIL, address, source, at, None)
            for address in sorted(set(addresses))
        ),
    ]


async def keep(
    connection: AsyncConnection, statements: Mapping[tuple[str, Kind], tuple[str, datetime]]
) -> None:
    """Keep statements for addresses nobody has ((email digest, kind) -> (source, when
    made)), each replacing only an older one of its kind for the same address."""
    if not statements:
        return
    rows = [
        {"digest": digest, "kind": kind, "source": source[:64], "recorded_at": at}
        for (digest, kind), (source, at) in sorted(statements.items())  # one lock order
    ]
    dialect_insert = postgres_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(EmailSuppression)
    # One statement given many parameter sets: compiled once, whatever the batch's size.
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=["digest", "kind"],
            set_={
                "source": statement.excluded.source,
                "recorded_at": statement.excluded.recorded_at,
            },
            where=EmailSuppression.recorded_at <= statement.excluded.recorded_at,
        ),
        rows,
    )


def mailbox(address: str, config: IdentityConfig = DEFAULT_CONFIG) -> str:
    """What a statement is kept under: the address's matching key, as the linker keys
    it (``jane.doe+news@gmail.com`` is ``janedoe@gmail.com``'s mailbox), or the address
    itself when it has none (a placeholder, or one the full check refuses)."""
    try:
        key = email_parts(address, config)[1]
    except ValueError:
        return address
    return key or address


async def holders(
    connection: AsyncConnection, keys: Collection[str]
) -> list[tuple[str, uuid.UUID, str]]:
    """(mailbox, customer, their address) of every customer whose address now is one of
    these mailboxes (matching keys), written plainly (the key itself) or as the provider
    folds it (``customers.email_key``)."""
    found: list[tuple[str, uuid.UUID, str]] = []
    for column in (Customer.email, Customer.email_key):
        for clause in matching(connection, column, keys):
            rows = await connection.execute(
                select(column, Customer.id, Customer.email).where(clause)
            )
            found += [(k, c, e) for k, c, e in rows if k is not None and e is not None]
    return found


class Suppressions:
    """What a writer giving customers addresses asks: do they carry a withdrawal?"""

    def __init__(self, tombstones: Tombstones, config: IdentityConfig = DEFAULT_CONFIG) -> None:
        self._tombstones = tombstones
        self._config = config

    async def reach(
        self, connection: AsyncConnection, mailboxes: Mapping[str, Collection[uuid.UUID]]
    ) -> dict[uuid.UUID, str]:
        """Give what is kept for each mailbox to every customer whose address now is that
        mailbox however written, but those named with it (given it already): whichever
        of them is mailed, the mail lands where the person said no. The customers it
        reached, with the mailbox."""
        if not mailboxes:
            return {}
        held = await holders(connection, list(mailboxes))
        others = [(c, e) for key, c, e in held if c not in mailboxes[key]]
        got = await self.apply(connection, others)
        return {c: key for key, c, _ in held if c in got}

    async def apply_changed(
        self, connection: AsyncConnection, before: Mapping[uuid.UUID, str | None]
    ) -> set[uuid.UUID]:
        """``apply`` to those of these customers whose address is not the one they had
        (customer -> address before: an unmerge's new customer had none)."""
        rows = await connection.execute(
            select(Customer.id, Customer.email).where(Customer.id.in_(list(before)))
        )
        changed = [(row.id, row.email) for row in rows if row.email != before[row.id]]
        return await self.apply(connection, changed)

    async def apply(
        self,
        connection: AsyncConnection,
        acquired: Iterable[tuple[uuid.UUID, str | None]],
    ) -> set[uuid.UUID]:
        """Give each customer what is kept for any of the addresses they just acquired
        (``(customer, address)`` pairs: a customer created with it, or a stored one whose
        record now carries it; the newest when several have one), with its source and
        time: a withdrawal unless their email-marketing statement is newer (an opt-in
        made after the withdrawal stands; on a tie with a grant the withdrawal wins; the
        same withdrawal is not recorded twice when the address is seen again), a hard
        bounce as an ``email_status`` observation (stored once however often it is
        given, with the address it was for). The customers that got either."""
        owners: dict[str, set[tuple[uuid.UUID, str]]] = {}
        for customer, email in acquired:
            digest = self._tombstones.email_digest(email)
            if digest is None or email is None:
                continue
            # Under the mailbox's key (kept so since), and the address as written (kept
            # so before: the same digest unless a provider's dots or plus tag fold).
            keyed = self._tombstones.digest("email", mailbox(email, self._config))
            held = normalize_email(email)  # as their profile holds it (the digest's form)
            for each in {digest, keyed}:
                owners.setdefault(each, set()).add((customer, held))
        if not owners:
            return set()
        withdrawn: dict[uuid.UUID, tuple[datetime, str]] = {}
        # (customer, the address they took on) -> the newest bounce kept for it
        bounced: dict[tuple[uuid.UUID, str], tuple[datetime, str]] = {}
        # An import's batch asks about thousands of addresses: planned for them.
        async with custom_plans(connection):
            for clause in matching(connection, EmailSuppression.digest, owners):
                rows = await connection.execute(
                    select(
                        EmailSuppression.digest,
                        EmailSuppression.kind,
                        EmailSuppression.recorded_at,
                        EmailSuppression.source,
                    ).where(clause)
                )
                for digest, kind, recorded_at, source in rows:
                    stated = (as_utc(recorded_at), source)
                    for customer, email in owners[digest]:
                        if kind == "withdraw":
                            withdrawn[customer] = max(withdrawn.get(customer, stated), stated)
                        elif kind == "undeliverable":
                            pair = (customer, email)
                            bounced[pair] = max(bounced.get(pair, stated), stated)
                        # else a kind this version does not know: not applied
            if withdrawn:
                statements = await _statements(connection, withdrawn)
                for customer, (stated_at, granted) in statements.items():
                    kept_at = withdrawn[customer][0]
                    if stated_at > kept_at or (stated_at == kept_at and not granted):
                        del withdrawn[customer]
        if withdrawn:
            await withdraw_many(
                connection,
                Purpose.EMAIL_MARKETING,
                {customer: source for customer, (_, source) in withdrawn.items()},
                {customer: recorded_at for customer, (recorded_at, _) in withdrawn.items()},
            )
        observations: list[ObservationRow] = [
            row
            for (customer, email), (at, source) in sorted(bounced.items())
            for row in bounce_rows(customer, [email], source, at)
        ]
        await insert_observations(connection, observations)
        return set(withdrawn) | {customer for customer, _ in bounced}


async def _statements(
    connection: AsyncConnection, customers: Iterable[uuid.UUID]
) -> dict[uuid.UUID, tuple[datetime, bool]]:
    """When each of these customers' current email-marketing statement was made, and
    whether it grants."""
    found: dict[uuid.UUID, tuple[datetime, bool]] = {}
    for clause in matching(connection, Consent.customer_id, customers):
        rows = await connection.execute(
            select(Consent.customer_id, Consent.recorded_at, Consent.granted).where(
                clause, Consent.purpose == Purpose.EMAIL_MARKETING.value
            )
        )
        for customer, recorded_at, granted in rows:
            found[customer] = (as_utc(recorded_at), bool(granted))
    return found
