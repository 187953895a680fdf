"""What ESP engagement events do to their recipients' profiles, inside the transaction
that stores them (gateway/ingest/esp_batches.py), so both commit or neither does.

- ``withdraw`` (an unsubscribe, a group unsubscribe, a spam report; Mandrill's unsub,
  spam, reject): email-marketing consent withdrawn with the consent service's rule (one
  current statement per purpose, replaced only by a newer one; on a tie the
  withdrawal wins), source ``<esp>:<event>``, recorded at the event's own time (the
  ESP's ``timestamp`` or ``ts``, whole seconds: the end of that second), never later
  than its arrival: a retried or late delivery then does not outrank an opt-in the
  person made after they unsubscribed.
  ``suppressed`` follows from it on every read.
- ``undeliverable`` (a hard bounce): the attribute ``email_status`` observed as
  ``undeliverable`` with the ESP as its source and the bounce's time, bounded the same
  way (``Customer.attributes(name: "email_status")`` shows it), and beside it, as
  ``bounced_email``, the address that bounced (and the customer's own, when that is
  the same mailbox written another way). A bounce is a fact about an address: the
  customer is undeliverable while their address is one that bounced
  (gateway/segments/fields.py), so a bounce of an address they no longer have (a late
  delivery, a merge's other address) leaves their new one mailable. The address is
  also kept as a suppression (gateway/privacy/suppressions.py) for whoever takes it on.
- Opens and clicks need nothing more than their event row, linked to the customer:
  ``engagement`` counts them (gateway/upstreams/event_store.py).

For an address no customer has, the same two are kept (gateway/privacy/suppressions.py)
and given to the customer who takes the address on.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.bulk import matching
from gateway.db.models import Customer
from gateway.identity.config import DEFAULT_CONFIG, IdentityConfig
from gateway.identity.observations import ObservationRow, insert_observations
from gateway.ingest.webhook_payloads import InboundEvent
from gateway.privacy.consent import Purpose, withdraw_many
from gateway.privacy.suppressions import (
    BOUNCED_EMAIL,
    EMAIL_STATUS,
    UNDELIVERABLE,
    bounce_rows,
    mailbox,
)

_WITHIN_SECOND = timedelta(microseconds=999_999)
__all__ = [
    "BOUNCED_EMAIL",
    "EMAIL_STATUS",
    "UNDELIVERABLE",
    "apply_consequences",
    "stated_at",
    "withdrawal_source",
]


def withdrawal_source(event: InboundEvent) -> str:
    """The source a withdrawal is recorded with: ``<esp>:<event>``."""
    return f"{event.source}:{event.type.removeprefix('email:')}"


def stated_at(event: InboundEvent, now: datetime) -> datetime:
    """When an ESP's statement was made: the event's own time, at the last instant of
    its whole second (both ESPs date events in whole seconds: a statement made within
    that second cannot be told apart, a true tie, and the tie errs to suppression), or
    ``now`` for one dated later (a clock ahead must not outrank what is said until then)."""
    return min(event.occurred_at + _WITHIN_SECOND, now)


async def apply_consequences(
    connection: AsyncConnection,
    stored: Sequence[tuple[uuid.UUID, InboundEvent]],
    now: datetime,
    config: IdentityConfig = DEFAULT_CONFIG,
) -> None:
    """The consequences of these stored events (customer, event), all at once; ``now``
    bounds their times."""
    withdrawn: dict[uuid.UUID, tuple[datetime, str]] = {}  # each customer's newest
    bounces = [(c, e) for c, e in stored if e.consequence == "undeliverable" and e.recipient]
    held = await _addresses(connection, {customer for customer, _ in bounces})
    bounced: list[ObservationRow] = []
    for customer_id, event in stored:
        at = stated_at(event, now)
        if event.consequence == "withdraw":
            stated = (at, withdrawal_source(event))
            withdrawn[customer_id] = max(withdrawn.get(customer_id, stated), stated)
    for customer_id, event in bounces:
        assert event.recipient is not None
        addresses = [event.recipient]
        own = held.get(customer_id)
        # Their own address when it is the bounced mailbox written another way
        # (``jane.doe+news@gmail.com`` bounced: ``janedoe@gmail.com`` cannot receive).
        if own is not None and mailbox(own, config) == mailbox(event.recipient, config):
            addresses.append(own)
        bounced += bounce_rows(customer_id, addresses, event.source, stated_at(event, now))
    if withdrawn:
        await withdraw_many(
            connection,
            Purpose.EMAIL_MARKETING,
            {customer: source for customer, (_, source) in withdrawn.items()},
            {customer: at for customer, (at, _) in withdrawn.items()},
        )
    await insert_observations(connection, bounced)


async def _addresses(
    connection: AsyncConnection, customers: set[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Each of these customers' address now (those that have one)."""
    found: dict[uuid.UUID, str] = {}
    for clause in matching(connection, Customer.id, customers):
        rows = await connection.execute(select(Customer.id, Customer.email).where(clause))
        found.update({customer: email for customer, email in rows if email is not None})
    return found
