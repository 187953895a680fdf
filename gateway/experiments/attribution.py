"""Clicks on recommended items, attributed to the list that served them.

An ESP's ``click`` event carries the link the recipient followed. When that link holds
a valid tracking parameter (gateway/experiments/tracking.py), the click is stored in
the ESP batch's own transaction (gateway/ingest/esp_batches.py) as a
``recommendation_clicks`` row: the event, the list and position the parameter names,
the recipient, and the send (the ESP's custom argument ``send_id``: SendGrid's
``custom_args``, Mandrill's ``metadata``). A link without the parameter, or with a
forged or damaged one, or dated more than ``CLOCK_SKEW`` before its list was made, is
an ordinary click: stored as an event, attributed to nothing.

The list's impression may be written after the click (impressions are buffered), so a
click row holds what the link says and is joined to its impression when read: the
item (the list's product at that position), the strategy, the experiment and variant.
An order within ``GATEWAY_CONVERSION_WINDOW_HOURS`` after the click is its conversion
(gateway/experiments/results.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db.recommendation_models import RecommendationClick, RecommendationImpression
from gateway.experiments.tracking import Tracker

SEND_ARGUMENT = "send_id"  # the custom argument (SendGrid) or metadata key (Mandrill)
# How far an ESP's clock (and its whole seconds) may run behind the gateway's: a click
# dated earlier than that before its list existed is not a click on it.
CLOCK_SKEW = timedelta(minutes=5)
_MAX_SEND_ID = 255


@dataclass(frozen=True, slots=True)
class ClickedLink:
    """A stored click event: its row, its recipient, its link, its time and send."""

    event_row_id: int
    customer_id: uuid.UUID
    url: str
    clicked_at: datetime
    send_id: str | None


@dataclass(frozen=True, slots=True)
class Attribution:
    """A click as attributed: list, item, strategy, experiment, variant and send (the
    click's send id, else the one the list was served for). Fields of the list are None
    while its impression is not written yet."""

    list_id: str
    position: int
    product_id: str | None
    strategy: str | None
    experiment: str | None
    variant: str | None
    send_id: str | None
    clicked_at: datetime


def send_of(properties: Mapping[str, Any]) -> str | None:
    """The send an ESP event names through its custom argument ``send_id``."""
    custom = properties.get("custom_args")
    return send_value(custom.get(SEND_ARGUMENT)) if isinstance(custom, dict) else None


def send_value(value: object) -> str | None:
    """The send a ``send_id`` names: a string, or an integer's digits, cut to 255
    characters. Anything else (a boolean, a fraction, an object) names none: JSON's
    ``true`` read as text is "1" on SQLite and "true" on Postgres, so it could name no
    one send on both. The ESP parsers store ``send_id`` as this (gateway/ingest/
    esp_payloads.py), so campaigns and clicks agree on every database."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)[:_MAX_SEND_ID] or None


async def record_clicks(
    connection: AsyncConnection, links: Sequence[ClickedLink], tracker: Tracker
) -> int:
    """Store the clicks whose links carry a valid tracking parameter, on the caller's
    transaction; returns how many."""
    rows = []
    for link in links:
        tracked = tracker.read(link.url)
        if tracked is None or link.clicked_at < tracked.made_at - CLOCK_SKEW:
            # No list, or a click dated before its list was made (a clock far behind, a
            # back-dated event): stored as engagement, attributed to nothing; counted,
            # it would convert on orders placed before anyone saw the list.
            continue
        rows.append(
            {
                "event_id": link.event_row_id,
                "list_id": tracked.list_id,
                "position": tracked.position,
                "customer_id": link.customer_id,
                "send_id": link.send_id,
                "clicked_at": link.clicked_at,
            }
        )
    if rows:
        await connection.execute(insert(RecommendationClick), rows)
    return len(rows)


async def clicks_of(engine: AsyncEngine, customer_id: uuid.UUID) -> list[Attribution]:
    """A customer's attributed clicks, newest first."""
    click, shown = RecommendationClick, RecommendationImpression
    query = (
        select(
            click.list_id,
            click.position,
            click.send_id,
            click.clicked_at,
            shown.items,
            shown.strategy,
            shown.experiment,
            shown.variant,
            shown.send_id,
        )
        .outerjoin(shown, shown.list_id == click.list_id)
        # A list served to someone else is not this customer's click (its impression
        # not written yet: kept, as its fields say).
        .where(
            click.customer_id == customer_id,
            or_(shown.customer_id.is_(None), shown.customer_id == click.customer_id),
        )
        .order_by(click.clicked_at.desc(), click.event_id.desc())
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return [
        Attribution(
            list_id=list_id,
            position=position,
            product_id=str(items[position]) if items and position < len(items) else None,
            strategy=strategy,
            experiment=experiment,
            variant=variant,
            send_id=send_id or list_send,
            clicked_at=clicked_at,
        )
        for (
            list_id,
            position,
            send_id,
            clicked_at,
            items,
            strategy,
            experiment,
            variant,
            list_send,
        ) in rows
    ]
