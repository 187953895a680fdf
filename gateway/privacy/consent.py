"""Consent per purpose: what the customer agreed to, who recorded it and when.

Two places know a customer's consent: the gateway's store (set through the API, a
webhook, a sync or the seed) and the CRM, read live. The more recent statement
wins; a CRM answer without a time loses to a stored one. The CRM's time is its
contact's last edit, though, not its consent's: so a CRM "yes" overrides a stored
"no" only when that "no" came from the CRM itself. Where neither says anything,
the answer is "not granted": personal data is served only on a yes.

What each purpose gates:
- ``personalisation``: behavioural data (events, engagement, cart, behaviour-based
  recommendations) is served and rendered only with it;
- ``email_marketing``: without it the customer is *suppressed* (an ESP must not mail);
- ``analytics``: recorded and exposed; the gateway itself does no tracking, and it
  keeps no behavioural event (a Segment call) of a customer with a stored "no" to it:
  ``refusing_analytics`` is the one rule the event stream and the Segment webhook ask.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from adapters.records import CrmContact
from gateway.db.bulk import matching
from gateway.db.models import Consent, ConsentChange, Customer, as_utc, utcnow
from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.privacy.consent_owner import sole_identities

_UNKNOWN_TIME = datetime.min.replace(tzinfo=UTC)
_ATTEMPTS = 3


class Purpose(StrEnum):
    EMAIL_MARKETING = "email_marketing"
    PERSONALISATION = "personalisation"
    ANALYTICS = "analytics"


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    purpose: str
    granted: bool
    source: str
    recorded_at: datetime


def effective(
    purpose: Purpose, stored: tuple[ConsentRecord, ...], crm: CrmContact | None
) -> ConsentRecord | None:
    """The statement that counts for one purpose: the most recent of store and CRM."""
    # A StrEnum member is its value: compared and looked up as it is, without reading
    # ``.value`` (an enum property: a send asks this 2,000 times).
    mine = next((c for c in stored if c.purpose == purpose), None)
    if mine is not None and mine.recorded_at.tzinfo is None:
        # SQLite hands stored times back naive: every answer is timezone-aware UTC.
        mine = replace(mine, recorded_at=as_utc(mine.recorded_at))
    said = getattr(crm.consents, purpose) if crm is not None else None
    if said is None or crm is None:
        return mine
    theirs = ConsentRecord(purpose.value, bool(said), crm.source, crm.updated_at or _UNKNOWN_TIME)
    if mine is None:
        return theirs
    if crm.updated_at is None or mine.recorded_at >= crm.updated_at:
        return mine
    if theirs.granted and not mine.granted and mine.source != crm.source:
        # The CRM dates the whole contact, not its consent: an edit of any other
        # property makes its old "yes" look newer than a "no" recorded here. Only the
        # CRM's own earlier statement is known to be older; otherwise the "no" stands.
        return mine
    return theirs


def granted(purpose: Purpose, stored: tuple[ConsentRecord, ...], crm: CrmContact | None) -> bool:
    found = effective(purpose, stored, crm)
    return bool(found and found.granted)


def has_stored(purpose: Purpose, stored: tuple[ConsentRecord, ...]) -> bool:
    return any(c.purpose == purpose for c in stored)


async def refusing_analytics(
    connection: AsyncConnection, customers: set[uuid.UUID]
) -> set[uuid.UUID]:
    """Of ``customers``, those with a stored "no" to analytics: none of their
    behavioural events is stored, whichever path (stream or webhook) brings it. Read on
    the writer's connection, so a statement committed before its transaction counts."""
    refused: set[uuid.UUID] = set()
    for clause in matching(connection, Consent.customer_id, customers):
        refused.update(
            await connection.scalars(select(Consent.customer_id).where(clause, *_ANALYTICS_REFUSED))
        )
    return refused


def refuses_analytics(customer_id: Any) -> ColumnElement[bool]:
    """``refusing_analytics`` as a condition on a customer id column, for a writer that
    asks it inside a lookup of its own (the stream's one lookup a batch)."""
    return exists().where(Consent.customer_id == customer_id, *_ANALYTICS_REFUSED)


_ANALYTICS_REFUSED = (Consent.purpose == Purpose.ANALYTICS.value, Consent.granted.is_(False))


def parse_purpose(raw: str) -> Purpose:
    try:
        return Purpose(raw)
    except ValueError:
        known = ", ".join(p.value for p in Purpose)
        raise InvalidInput(
            f"Invalid value for argument 'purpose': {raw!r}; use one of {known}", field="purpose"
        ) from None


class ConsentStore:
    """Records consent statements: one current row per customer and purpose, and every
    statement in the history."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def history(
        self, customer_id: uuid.UUID, purpose: Purpose | None = None, limit: int = 100
    ) -> list[ConsentRecord]:
        """The statements stored for a customer (one purpose, or all), newest first."""
        return (await self.histories([customer_id], purpose, limit))[customer_id]

    async def histories(
        self, customer_ids: list[uuid.UUID], purpose: Purpose | None = None, limit: int = 100
    ) -> dict[uuid.UUID, list[ConsentRecord]]:
        """``history`` of many customers in one round trip (a list of customers asks
        for each one's history at once). The limit is per customer and applied by the
        database (a window's row number), so a customer with a long history costs no
        more rows than ``limit``."""
        found: dict[uuid.UUID, list[ConsentRecord]] = {c: [] for c in customer_ids}
        async with self._sessions() as session:
            connection = await session.connection()
            for clause in matching(connection, ConsentChange.customer_id, customer_ids):
                rank = func.row_number().over(
                    partition_by=ConsentChange.customer_id,
                    order_by=(ConsentChange.recorded_at.desc(), ConsentChange.id.desc()),
                )
                ranked = select(
                    ConsentChange.customer_id,
                    ConsentChange.purpose,
                    ConsentChange.granted,
                    ConsentChange.source,
                    ConsentChange.recorded_at,
                    rank.label("rank"),
                ).where(clause)
                if purpose is not None:
                    ranked = ranked.where(ConsentChange.purpose == purpose.value)
                newest = ranked.subquery()
                query = (
                    select(newest)
                    .where(newest.c.rank <= limit)
                    .order_by(newest.c.customer_id, newest.c.rank)
                )
                for row in await session.execute(query):
                    found[row.customer_id].append(
                        ConsentRecord(row.purpose, row.granted, row.source, as_utc(row.recorded_at))
                    )
        return found

    async def record(
        self, customer_id: uuid.UUID, purpose: Purpose, granted: bool, source: str
    ) -> ConsentRecord:
        """Record a statement made now. Concurrent statements for one purpose keep one
        current row, the most recent: an older one committing later does not replace it."""
        source = source.strip()
        if not source or len(source) > 64:
            raise InvalidInput("A consent's source is 1 to 64 characters", field="source")
        for _ in range(_ATTEMPTS):
            try:
                return await self._record(customer_id, purpose, granted, source)
            except IntegrityError:
                continue  # a concurrent first statement for this purpose: now an update
        raise Conflict("Consent changed concurrently; try again", field="purpose")

    async def _record(
        self, customer_id: uuid.UUID, purpose: Purpose, granted: bool, source: str
    ) -> ConsentRecord:
        async with self._sessions.begin() as session:
            if await session.get(Customer, customer_id) is None:
                raise NotFound("No customer with this id", field="customerId")
            now = utcnow()
            # Whose statement it is, if the customer is one identity (an unmerge needs it).
            sole = await sole_identities(await session.connection(), [customer_id])
            # Every statement joins the history, even one a newer concurrent one outranks.
            session.add(
                ConsentChange(
                    customer_id=customer_id,
                    purpose=purpose.value,
                    granted=granted,
                    source=source,
                    recorded_at=now,
                    identity_id=sole.get(customer_id),
                )
            )
            current = (Consent.customer_id == customer_id) & (Consent.purpose == purpose.value)
            # One statement, atomic on every backend: it replaces only an older one, or
            # one of the same instant unless that is a withdrawal and this a grant (a
            # true tie errs to suppression, as ``withdraw_many``'s does).
            replace_older = (
                update(Consent)
                .where(current, _outranked_by(granted, now))
                .values(granted=granted, source=source, recorded_at=now)
            )
            replaced = await session.execute(replace_older)
            existing = (
                (
                    await session.execute(
                        select(Consent.recorded_at, Consent.granted).where(current)
                    )
                ).first()
                if _rowcount(replaced) == 0
                else None
            )
            if existing is not None and _older((existing[0], existing[1]), granted, now):
                # A first statement for this purpose committed between our UPDATE (which
                # saw no row) and this read: ours is newer, so the UPDATE again, which
                # now sees that row. Answering without it dropped the newest statement.
                await session.execute(replace_older)
            elif _rowcount(replaced) == 0 and existing is None:
                session.add(
                    Consent(
                        customer_id=customer_id,
                        purpose=purpose.value,
                        granted=granted,
                        source=source,
                        recorded_at=now,
                    )
                )
                await session.flush()  # a concurrent insert surfaces here, to be retried
            return ConsentRecord(purpose.value, granted, source, now)


async def withdraw_many(
    connection: AsyncConnection,
    purpose: Purpose,
    statements: Mapping[uuid.UUID, str],
    at: Mapping[uuid.UUID, datetime] | None = None,
) -> None:
    """Withdraw ``purpose`` for many stored customers at once (customer -> source), made
    now (or at ``at[customer]``: an ESP's event time, or a withdrawal kept before the
    customer existed), on ``connection``'s transaction: one upsert per chunk that, as
    ``record``, replaces only an older statement or one of the same instant (a true tie
    errs to suppression; a newer one committed meanwhile stands)."""
    await state_many(connection, purpose, False, statements, at)


async def state_many(
    connection: AsyncConnection,
    purpose: Purpose,
    granted: bool,
    statements: Mapping[uuid.UUID, str],
    at: Mapping[uuid.UUID, datetime] | None = None,
) -> None:
    """``withdraw_many`` for a grant or a withdrawal: a statement a source made at a
    time of its own (a CRM's property change), each joining the history and replacing
    the current one only when that is older (a grant of the same instant as a
    withdrawal does not replace it)."""
    now = utcnow()
    rows = [
        {
            "customer_id": customer,
            "purpose": purpose.value,
            "granted": granted,
            "source": source[:64],
            "recorded_at": as_utc(at[customer]) if at and customer in at else now,
        }
        for customer, source in sorted(statements.items())  # one lock order for everyone
    ]
    if not rows:
        return
    dialect_insert = postgres_insert if connection.dialect.name == "postgresql" else sqlite_insert
    # The history first (every statement, as it came), then the statement that counts;
    # each names its customer's identity when there is one only, as ``record`` does.
    sole = await sole_identities(connection, statements.keys())
    history = [
        {**row, "identity_id": sole.get(customer)}
        for row, customer in zip(rows, sorted(statements), strict=True)
    ]
    await connection.execute(dialect_insert(ConsentChange), history)
    statement = dialect_insert(Consent)
    # One statement given many parameter sets: compiled once and cached, where a VALUES
    # list of each batch's size was compiled afresh every time.
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=["customer_id", "purpose"],
            set_={
                "granted": statement.excluded.granted,
                "source": statement.excluded.source,
                "recorded_at": statement.excluded.recorded_at,
            },
            where=_outranked_by(granted, statement.excluded.recorded_at),
        ),
        rows,
    )


def _outranked_by(granted: bool, at: datetime | ColumnElement[Any]) -> ColumnElement[bool]:
    """A current statement a new one (``granted``, made ``at``) replaces."""
    if not granted:
        return Consent.recorded_at <= at
    return or_(Consent.recorded_at < at, and_(Consent.recorded_at == at, Consent.granted))


def _older(existing: tuple[datetime, bool], granted: bool, at: datetime) -> bool:
    """``_outranked_by`` of a statement read back: (made when, granted)."""
    made = as_utc(existing[0])
    return made < at or (made == at and (existing[1] or not granted))


def _rowcount(result: Any) -> int:
    count: int = result.rowcount
    return count
