"""What ESP engagement events do to their recipients' profiles, inside the transaction
that stores them (gateway/ingest/esp_batches.py), so both commit or neither does.

- ``withdraw`` (an unsubscribe, a group unsubscribe, a spam report; Mandrill's unsub,
  spam, reject): email-marketing consent withdrawn with the consent service's rule (one
  current statement per purpose, replaced only by a newer one), source
  ``<esp>:<event>``, recorded when it arrives. Not at the ESP's time: that is in whole
  seconds and may be hours old on a retried delivery, so a "yes" stored in the same
  second, or a seeded one, would outrank the withdrawal and the person would still be
  mailed; a missed unsubscribe is the worse error. The ESP's time stays on the event
  row. ``suppressed`` follows from it on every read.
- ``undeliverable`` (a hard bounce): the attribute ``email_status`` observed as
  ``undeliverable`` with the ESP as its source and the bounce's time
  (``Customer.attributes(name: "email_status")`` shows it).
- Opens and clicks need nothing more than their event row, linked to the customer:
  ``engagement`` counts them (gateway/upstreams/event_store.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.identity.observations import ObservationRow, insert_observations
from gateway.ingest.webhook_payloads import InboundEvent
from gateway.privacy.consent import Purpose, withdraw_many

EMAIL_STATUS = "email_status"  # the attribute a hard bounce sets
UNDELIVERABLE = "undeliverable"


def withdrawal_source(event: InboundEvent) -> str:
    """The source a withdrawal is recorded with: ``<esp>:<event>``."""
    return f"{event.source}:{event.type.removeprefix('email:')}"


async def apply_consequences(
    connection: AsyncConnection, stored: Sequence[tuple[uuid.UUID, InboundEvent]]
) -> None:
    """The consequences of these stored events (customer, event), all at once."""
    withdrawn: dict[uuid.UUID, str] = {}
    bounced: list[ObservationRow] = []
    for customer_id, event in stored:
        if event.consequence == "withdraw":
            withdrawn[customer_id] = withdrawal_source(event)
        elif event.consequence == "undeliverable":
            row = (customer_id, EMAIL_STATUS, UNDELIVERABLE, event.source, event.occurred_at)
            bounced.append(row)
    if withdrawn:
        await withdraw_many(connection, Purpose.EMAIL_MARKETING, withdrawn)
    await insert_observations(connection, bounced)
