"""Campaign metrics per send, counted in SQL from the ESP events stored for it.

A send is what the ESP's custom argument ``send_id`` names on its events (SendGrid's
``custom_args``, Mandrill's ``metadata``). Per send, distinct recipients (customers):

- ``delivered``: with a delivery (SendGrid ``delivered``, Mandrill ``send``), or an
  open, a click, an unsubscribe or a spam report (each proves one where the ESP posts no
  deliveries): so every recipient counted below is counted here, and each rate is a
  proportion;
- ``opened``, ``clicked``: with an open, with a click;
- ``converted``: with a click followed within the conversion window by an order of
  theirs (as in experiment results, gateway/experiments/results.py);
- ``unsubscribed``: with an unsubscribe (SendGrid ``unsubscribe``, ``group_unsubscribe``,
  Mandrill ``unsub``);

and each as a rate of ``delivered``.

Per segment: ``by_segment`` gives the same figures for each RFM segment of the
recipients (``customer_scores.rfm_segment`` as the last score build set it; recipients
without scores under ``unscored``), in one grouped query: each recipient is in one
segment, so the segments' counts add up to the send's. ``audience``, a query of customer
ids, restricts either to those recipients (a saved segment's members, say).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.models import Event
from gateway.db.score_models import CustomerScore
from gateway.experiments.order_times import ordered_after
from gateway.upstreams.event_store import ESP_SOURCES

UNSUBSCRIBED = ("email:unsubscribe", "email:group_unsubscribe", "email:unsub")
# A spam report too proves the mail arrived; a Mandrill ``reject`` (never sent) does not.
SPAM_REPORTS = ("email:spamreport", "email:spam")
DELIVERED = (
    "email:delivered",
    "email:send",
    "email:open",
    "email:click",
    *UNSUBSCRIBED,
    *SPAM_REPORTS,
)
Audience = Select[uuid.UUID]
UNSCORED = "unscored"  # the segment of recipients no score build has placed


@dataclass(frozen=True, slots=True)
class CampaignMetrics:
    send_id: str
    delivered: int
    opened: int
    clicked: int
    converted: int
    unsubscribed: int

    def rate(self, count: int) -> float | None:
        return count / self.delivered if self.delivered else None

    @property
    def open_rate(self) -> float | None:
        return self.rate(self.opened)

    @property
    def click_through_rate(self) -> float | None:
        return self.rate(self.clicked)

    @property
    def conversion_rate(self) -> float | None:
        return self.rate(self.converted)

    @property
    def unsubscribe_rate(self) -> float | None:
        return self.rate(self.unsubscribed)


class Campaigns:
    def __init__(self, engine: AsyncEngine, window_hours: float) -> None:
        self._engine = engine
        self.window_s = window_hours * 3600.0

    async def of_send(self, send_id: str, audience: Audience | None = None) -> CampaignMetrics:
        """One send's figures, over ``audience``'s customers only when given."""
        query = self._query(send_id, audience)
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).one()
        return CampaignMetrics(send_id, *(int(n or 0) for n in row))

    async def by_segment(
        self, send_id: str, audience: Audience | None = None
    ) -> dict[str, CampaignMetrics]:
        """One send's figures per RFM segment of its recipients (``UNSCORED`` for those
        without scores), segments with no recipient left out."""
        segment = func.coalesce(CustomerScore.rfm_segment, UNSCORED)
        query = (
            self._query(send_id, audience)
            .add_columns(segment)
            .outerjoin(CustomerScore, CustomerScore.customer_id == Event.customer_id)
            .group_by(segment)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return {
            str(name): CampaignMetrics(send_id, *(int(n or 0) for n in counts))
            for *counts, name in sorted(rows, key=lambda row: str(row[-1]))
        }

    def _query(self, send_id: str, audience: Audience | None) -> Select[Any]:
        send = Event.properties[("custom_args", "send_id")].as_string()
        bought = ordered_after(Event.customer_id, Event.occurred_at, self.window_s, self._dialect)

        def recipients(condition: Any) -> Any:
            return func.count(func.distinct(case((condition, Event.customer_id), else_=None)))

        query = select(
            recipients(Event.type.in_(DELIVERED)),
            recipients(Event.type == "email:open"),
            recipients(Event.type == "email:click"),
            recipients((Event.type == "email:click") & bought),
            recipients(Event.type.in_(UNSUBSCRIBED)),
        ).where(
            Event.source.in_(ESP_SOURCES),
            send == send_id,
            Event.customer_id.is_not(None),
        )
        if audience is not None:
            query = query.where(Event.customer_id.in_(audience))
        return query

    @property
    def _dialect(self) -> str:
        return self._engine.dialect.name
