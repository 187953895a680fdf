"""The unified-profile schema.

One ``customers`` row per person; everything each source system says about them
hangs off it with its source and time, so provenance and erasure are per row.
Every change to this module needs an Alembic migration in ``migrations/``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.functions import FunctionElement

# Named constraints keep migrations identical on Postgres and SQLite (batch mode needs names).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(stamp: datetime) -> datetime:
    """A stored moment as timezone-aware UTC: SQLite hands back naive times, and every
    time the gateway stores is UTC."""
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A moment, stored and read back as timezone-aware UTC on every backend.

    Postgres keeps ``timestamptz`` and answers aware values; SQLite has no time zones:
    SQLAlchemy writes the wall-clock digits of whatever it is given (dropping any
    offset, so a +02:00 moment would be stored two hours off) and reads back naive
    values. Converting on the way in and stamping UTC on the way out makes both the
    same, so no reader has to patch time zones field by field.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # A naive moment is taken as UTC: the gateway only makes aware ones.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is UTC:
            return value  # asyncpg's timestamptz: already UTC (a read of 5,000 rows skips
            # 5,000 ``astimezone`` calls)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime(),
        dict[str, Any]: JSON,
    }


class Customer(Base):
    """A unified person: the golden profile values, denormalised for fast reads."""

    __tablename__ = "customers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    # The address's matching key where a provider folds it to another spelling
    # (``folded_email``; migration 0029): an ESP's unsubscribe from the mailbox finds
    # every customer holding it. Indexed only where set.
    email_key: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    locale: Mapped[str | None] = mapped_column(String(35))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    changed_at: Mapped[datetime] = mapped_column(server_default=func.now(), index=True)

    __table_args__ = (
        Index(
            "ix_customers_email_key",
            "email_key",
            postgresql_where=text("email_key IS NOT NULL"),
            sqlite_where=text("email_key IS NOT NULL"),
        ),
    )

    identities: Mapped[list[Identity]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", order_by="Identity.source"
    )
    # Read with the profile (consent gates what is served); written only through Consent rows.
    consents: Mapped[list[Consent]] = relationship(viewonly=True, order_by="Consent.purpose")


class Identity(Base):
    """The id a source system knows this customer by; one owner per (source, id)."""

    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint("source", "external_id", name="uq_identities_source_external_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    source: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    changed_at: Mapped[datetime] = mapped_column(server_default=func.now(), index=True)

    customer: Mapped[Customer] = relationship(back_populates="identities")


class value_digest(FunctionElement[str]):  # lower case: a SQL function, named as one
    """An attribute value as its unique key compares it: ``md5`` on Postgres (a value may
    be longer than a btree entry allows), the text itself on SQLite (no ``md5`` there);
    a missing value counts as the empty one on both."""

    type = String()
    name = "value_digest"
    inherit_cache = True


@compiles(value_digest, "postgresql")
def _value_digest_postgres(element: value_digest, compiler: Any, **kw: Any) -> str:
    return f"md5(coalesce({compiler.process(element.clauses, **kw)}, ''))"


@compiles(value_digest)
def _value_digest_other(element: value_digest, compiler: Any, **kw: Any) -> str:
    return f"coalesce({compiler.process(element.clauses, **kw)}, '')"


class Attribute(Base):
    """One value one source reported for one profile field, and when it saw it.

    An observation is stored once (``uq_attributes_observation``, migration 0010): the
    same value from the same source at the same time for the same customer is the same
    fact, so an import run again after a crash, or a webhook resent under a new id,
    adds nothing.  Writers insert with ON CONFLICT DO NOTHING."""

    __tablename__ = "attributes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(64))
    observed_at: Mapped[datetime] = mapped_column(default=utcnow)
    changed_at: Mapped[datetime] = mapped_column(server_default=func.now(), index=True)
    # The identity whose record reported it, or whose person the API or a merge said it
    # of (migration 0028), so an unmerge takes back all of it; None when it cannot be
    # told (a customer of several identities) and for an ESP's bounces.
    identity_id: Mapped[int | None] = mapped_column(Integer, default=None)

    # Leads with (customer_id, name): it serves the per-customer reads as well.
    __table_args__ = (
        Index(
            "uq_attributes_observation",
            customer_id,
            name,
            source,
            observed_at,
            value_digest(value),
            unique=True,
        ),
        # E-mail statuses: a later word outranks a hard bounce in the segments'
        # suppression (migration 0015).
        Index(
            "ix_attributes_email_status",
            customer_id,
            observed_at,
            postgresql_where=text("name = 'email_status'"),
            sqlite_where=text("name = 'email_status'"),
        ),
        # The addresses that hard-bounced, read a page of customers at a time by the
        # segments' suppression (migration 0026).
        Index(
            "ix_attributes_bounced_email",
            customer_id,
            observed_at,
            postgresql_where=text("name = 'bounced_email'"),
            sqlite_where=text("name = 'bounced_email'"),
        ),
        # Every address a customer was seen with: an ESP's unsubscribe for an address
        # that is no longer their golden one still finds them (migration 0017).
        Index(
            "ix_attributes_email_value",
            value,
            postgresql_where=text("name = 'email'"),
            sqlite_where=text("name = 'email'"),
        ),
    )


class Consent(Base):
    """The current consent for one purpose, with who recorded it and when."""

    __tablename__ = "consents"
    __table_args__ = (
        UniqueConstraint("customer_id", "purpose", name="uq_consents_customer_purpose"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(64))
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    changed_at: Mapped[datetime] = mapped_column(server_default=func.now(), index=True)


class ConsentChange(Base):
    """Every consent statement ever recorded, one row each (``consents`` keeps only each
    purpose's current one): the history a steward reads. Erased with the customer."""

    __tablename__ = "consent_history"
    __table_args__ = (
        Index("ix_consent_history_customer", "customer_id", "purpose", "recorded_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(64))
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The identity the statement was made for, when its customer had only that one (an
    # unmerge hands it to whoever that identity becomes); None: it cannot be told.
    identity_id: Mapped[int | None] = mapped_column(Integer, default=None)


# The events that are orders (Shopify's webhooks, Segment's ``Order Completed``), and the
# condition that finds them as written: a literal the planners match against the partial
# index's own (a bound list would not prove it).
ORDER_TYPES = ("orders/create", "orders/paid", "orders/updated", "track:Order Completed")
ORDERS_ONLY = text("type IN ({})".format(", ".join(f"'{name}'" for name in ORDER_TYPES)))


class Event(Base):
    """A behavioural or commerce event; (source, event_id) makes delivery idempotent."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "event_id", name="uq_events_source_event_id"),
        Index("ix_events_customer_occurred", "customer_id", "occurred_at"),
        # A customer's orders in a time range, for each served list or click (an
        # experiment's orders and conversions): through the index above every open,
        # click and view of the range was read too (~25-50 us a list on SQLite).
        Index(
            "ix_events_customer_orders",
            "customer_id",
            "occurred_at",
            postgresql_where=ORDERS_ONLY,
            sqlite_where=ORDERS_ONLY,
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE")
    )
    source: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(100))
    occurred_at: Mapped[datetime] = mapped_column()
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    changed_at: Mapped[datetime] = mapped_column(server_default=func.now(), index=True)
    # The call's session id, filled by the database from ``properties`` whichever path
    # writes the row (migration 0023): ``engagement`` counts them without parsing the JSON.
    session_id: Mapped[str | None] = mapped_column(
        Text, Computed("properties -> 'properties' ->> 'session_id'")
    )


def order_key(event: Any) -> ColumnElement[str]:
    """The order an order event is a copy of (``event``: ``Event`` or an alias of it):
    Shopify's ``order_id`` at the top of the stored properties, Segment's inside
    ``properties``; NULL when neither has one. One expression for every reader that
    makes one order of its copies (the scores' ledger, the experiments' conversions)."""
    props = event.properties
    return func.coalesce(props["order_id"].as_string(), props["properties"]["order_id"].as_string())


class Template(Base):
    """One version of a named Liquid template; a save never overwrites."""

    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_templates_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# What a merge or the linker's fold audits, with the id it removed as ``details.merged``
# (gateway/identity/merges.py, linkage/folding.py), and the condition that finds them,
# as written (a literal the planners match against the partial index's own; a bound
# list would not prove it).
MERGE_OPERATION, FOLD_OPERATION = "merge_customers", "fold_customers"
UNMERGE_OPERATION = "unmerge_customer"  # gateway/identity/unmerges.py
MERGE_OPERATIONS = (MERGE_OPERATION, FOLD_OPERATION)
_QUOTED = ", ".join(f"'{name}'" for name in MERGE_OPERATIONS)
MERGES_ONLY = text(f"operation IN ({_QUOTED})")
HAS_ENTRY_ID = text("entry_id IS NOT NULL")


class AuditEntry(Base):
    """Who did what to which customer, and when; never the data itself."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_customer_at", "customer_id", "occurred_at"),
        # The merges a time range holds (migration 0027), among a row for every read:
        # the impressions writer reads them to give a list served to a customer merged
        # away since to the survivor; through the time index alone it read every read of
        # the range (~16 million rows an hour of a saturated worker).
        Index(
            "ix_audit_log_merges",
            "occurred_at",
            postgresql_where=MERGES_ONLY,
            sqlite_where=MERGES_ONLY,
        ),
        # An entry stored once however often its write is retried (migration 0031): the
        # buffered writer's retry after a commit whose reply was lost skips the entries
        # stored. Rows written before it have no id, and no place in the index.
        Index(
            "ux_audit_log_entry_id",
            "entry_id",
            unique=True,
            postgresql_where=HAS_ENTRY_ID,
            sqlite_where=HAS_ENTRY_ID,
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    operation: Mapped[str] = mapped_column(String(100))
    customer_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Made when the entry is queued (gateway/privacy/audit.py); None for the rows
    # written before migration 0031 and for those written with the change they audit.
    entry_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
