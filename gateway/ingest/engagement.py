"""What an ESP engagement event does to its recipient's profile, inside the transaction
that stores the event (gateway/ingest/webhooks.py), so both commit or neither does.

- The recipient is the stored customer with that address; an address nobody has is
  no one's: the event is acknowledged and nothing is stored (no profile is created
  from an ESP's word).
- ``withdraw`` (an unsubscribe, a spam report, a rejection): email-marketing consent
  withdrawn through the consent service (one current statement per purpose), source
  ``<esp>:<event>``, recorded when it arrives. Not at the ESP's time: that is in whole
  seconds and may be hours old on a retried delivery, so a "yes" stored in the same
  second, or a seeded one, would outrank the withdrawal and the person would still be
  mailed; a missed unsubscribe is the worse error. The ESP's time stays on the event
  row. ``suppressed`` follows from it on every read.
- ``undeliverable`` (a hard bounce): the attribute ``email_status`` observed as
  ``undeliverable`` with the ESP as its source (``Customer.attributes`` shows it).
- Opens and clicks need nothing more than their event row, linked to the customer:
  ``engagement`` counts them (gateway/upstreams/event_store.py).
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker

from gateway.db.models import Customer
from gateway.identity.observations import insert_observations
from gateway.ingest.webhook_payloads import InboundEvent
from gateway.privacy.consent import Purpose, record_statement

EMAIL_STATUS = "email_status"  # the attribute a hard bounce sets
UNDELIVERABLE = "undeliverable"


async def recipient_of(connection: AsyncConnection, email: str) -> uuid.UUID | None:
    """The stored customer with this (normalised) address, or None."""
    found: uuid.UUID | None = await connection.scalar(
        select(Customer.id).where(Customer.email == email).limit(1)
    )
    return found


async def apply_consequence(
    connection: AsyncConnection, customer_id: uuid.UUID, event: InboundEvent
) -> None:
    """The event's consequence for the customer, written on ``connection``."""
    kind = event.type.removeprefix("email:")
    if event.consequence == "withdraw":
        sessions = async_sessionmaker(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        await record_statement(
            sessions,
            customer_id,
            Purpose.EMAIL_MARKETING,
            False,
            f"{event.source}:{kind}"[:64],
        )
    elif event.consequence == "undeliverable":
        row = (customer_id, EMAIL_STATUS, UNDELIVERABLE, event.source, event.occurred_at)
        await insert_observations(connection, [row])
