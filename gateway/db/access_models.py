"""Access and erasure bookkeeping: API keys (hashed), tombstones of erased customers, and
whom unlinked events name.

Kept apart from the profile schema: no table holds customer data. A key row stores
only a hash of the secret; a tombstone and an event subject only a keyed hash of an
identifier.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.models import Base, utcnow


class ApiKey(Base):
    """One client's credential: its scopes and limit; the secret itself is never stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class Tombstone(Base):
    """An identifier of an erased customer, as a keyed hash: it blocks re-creation
    from a later sync, webhook or import without keeping the identifier itself."""

    __tablename__ = "tombstones"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(default=utcnow)


class EventSubject(Base):
    """An identifier an event carries without being linked by it (an anonymous Segment
    event's traits e-mail or phone, any Segment event's ``anonymousId``), as the same
    keyed hash a tombstone holds: erasing the person finds and removes those events,
    and an event carrying a tombstoned identifier is never stored."""

    __tablename__ = "event_subjects"

    event_id: Mapped[int] = mapped_column(
        ForeignKey("events.id", ondelete="CASCADE"), primary_key=True
    )
    digest: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class WebhookReceipt(Base):
    """A digest of a signed webhook body, for sources whose event ids travel outside the
    signature (Shopify's ``X-Shopify-Webhook-Id``): a captured body resent under a new
    id is then still a duplicate. Goes with its event (an erased person's replays are
    refused by the tombstones instead)."""

    __tablename__ = "webhook_receipts"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)


class EmailSuppression(Base):
    """What an ESP said of an address, as the same keyed hash a tombstone holds:
    ``withdraw`` (an unsubscribe, group unsubscribe or spam report, before any customer
    had the address) or ``undeliverable`` (a hard bounce, whoever had it). A customer
    later given that address starts with it, at its source and time: the withdrawal as
    a consent statement only a newer one outranks, the bounce as an ``email_status``
    observation with the address it was for."""

    __tablename__ = "email_suppressions"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True, server_default="withdraw")
    source: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsoleSignOut(Base):
    """A console session signed out before its time ran out (the SHA-256 of its own
    random token, never a key): its cookie, copied or kept by a browser, opens nothing
    any more, on any instance. Kept until the session would have expired anyway."""

    __tablename__ = "console_sign_outs"

    session_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
