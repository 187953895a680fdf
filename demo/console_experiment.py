"""The demo's experiment, with results to show: the console's Customer 360 shows each
customer's variant, its Experiments and Health pages the arms with their intervals.

The demo has no traffic, so this writes what a campaign a week ago would have left, as
``demo/recommendation_history.py`` does for the people's history: the experiment of
``gateway simulate-send`` (popular products against the model's personal ones, half
each), one served list per mailable customer with personalisation consent (the variant
the experiment's hash gives them, as serving would), and what those customers did
with the email, stored as the webhooks store it: SendGrid opens and clicks (each click
attributed to its list) and, after some clicks, an order (a Segment ``Order Completed``
call). Deterministic (a seeded generator), written once: on a later start the
experiment's window is only extended when it has ended, so its Health chart stays.
``gateway simulate-send`` saves the same experiment with a window of its own from the
time of its send, so what is written here never counts in its results.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from demo.simulated_send import EXPERIMENT, VARIANTS
from gateway.db.models import Consent, Event
from gateway.db.recommendation_models import (
    RecommendationClick,
    RecommendationImpression,
    RecommendationItem,
    RecommendationList,
)
from gateway.errors import Conflict
from gateway.experiments.assignment import Experiment, experiment
from gateway.experiments.store import ExperimentStore

log = logging.getLogger("demo.console_experiment")
SEND_ID = "demo-campaign"
SENT_DAYS_AGO = 7
RUNS_DAYS_AHEAD = 30
LIST_LENGTH = 6
# What a recipient does, by the strategy that chose their products: the model's lists
# are clicked and bought from more often (as `gateway simulate-send` finds).
OPEN = 0.45
CLICK_AFTER_OPEN = {"model": 0.45, "popularity": 0.22}
ORDER_AFTER_CLICK = {"model": 0.35, "popularity": 0.15}


def demo_experiment(now: datetime) -> Experiment:
    """The experiment as first saved: sent a week ago, running for a month more."""
    return experiment(
        EXPERIMENT,
        [(str(v["name"]), str(v["strategy"]).lower(), float(str(v["weight"]))) for v in VARIANTS],
        now - timedelta(days=SENT_DAYS_AGO, hours=1),
        now + timedelta(days=RUNS_DAYS_AHEAD),
    )


async def prepare_demo_experiment(
    sessions: async_sessionmaker[AsyncSession], now: datetime | None = None
) -> int:
    """Save and fill the demo's experiment unless it is there; returns the lists written
    (0 when it was there: an ended one is extended, not written again)."""
    now = now or datetime.now(UTC)
    store = ExperimentStore(sessions)
    found = await store.get(EXPERIMENT)
    try:
        if found is not None:
            if found.end <= now:  # the demo's database outlived it: show it running
                await store.save(
                    experiment(
                        found.name,
                        [(v.name, v.strategy, v.weight) for v in found.variants],
                        found.start,
                        now + timedelta(days=RUNS_DAYS_AHEAD),
                    )
                )
            return 0
        found = await store.save(demo_experiment(now))
    except Conflict as exc:  # someone saved another experiment over this time
        log.info("demo experiment not saved: %s", exc)
        return 0
    return await _write_campaign(sessions, found)


async def _write_campaign(sessions: async_sessionmaker[AsyncSession], found: Experiment) -> int:
    rng = random.Random(26)
    sent = found.start + timedelta(hours=1)
    async with sessions.begin() as session:
        recipients = await _recipients(session)
        personal = await _personal_lists(session, recipients)
        popular = await _popular(session)
        impressions: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        clicks: list[dict[str, Any]] = []  # event_id filled once the events are stored
        for number, customer_id in enumerate(recipients):
            variant = found.variant_of(customer_id)
            items = personal.get(customer_id) if variant.strategy == "model" else None
            items = items or popular
            if not items:
                continue
            list_id = f"demo{number:012d}"
            served = sent + timedelta(seconds=rng.uniform(0, 600))
            impressions.append(
                {
                    "list_id": list_id,
                    "customer_id": customer_id,
                    "served_at": served,
                    "surface": "render",
                    "strategy": variant.strategy,
                    "experiment": found.name,
                    "variant": variant.name,
                    "send_id": SEND_ID,
                    "items": items,
                }
            )
            if rng.random() >= OPEN:
                continue
            opened = served + timedelta(seconds=rng.uniform(120, 6 * 3600))
            events.append(_email(customer_id, f"{list_id}-open", "email:open", opened, {}))
            if rng.random() >= CLICK_AFTER_OPEN.get(variant.strategy, 0.0):
                continue
            position = rng.randrange(len(items))
            clicked = opened + timedelta(seconds=rng.uniform(5, 900))
            url = f"https://shop.example.com/products/{items[position]}"
            events.append(
                _email(customer_id, f"{list_id}-click", "email:click", clicked, {"url": url})
            )
            clicks.append(
                {
                    "event_id": f"{list_id}-click",
                    "list_id": list_id,
                    "position": position,
                    "customer_id": customer_id,
                    "send_id": SEND_ID,
                    "clicked_at": clicked,
                }
            )
            if rng.random() < ORDER_AFTER_CLICK.get(variant.strategy, 0.0):
                ordered = clicked + timedelta(seconds=rng.uniform(300, 3 * 3600))
                events.append(_order(customer_id, list_id, items[position], ordered))
        if impressions:
            await session.execute(insert(RecommendationImpression), impressions)
        if events:
            await session.execute(insert(Event), events)
        if clicks:
            rows = await session.execute(  # by prefix, not by a list of ids (see above)
                select(Event.event_id, Event.id).where(
                    Event.source == "sendgrid", Event.event_id.like("demo%-click")
                )
            )
            stored: dict[str, int] = {}
            for event_id, row_id in rows:  # (a Result has keys(): dict() misreads it)
                stored[event_id] = row_id
            for click in clicks:
                click["event_id"] = stored[click["event_id"]]
            await session.execute(insert(RecommendationClick), clicks)
    log.info(
        "demo experiment %s: %d lists, %d clicks written", found.name, len(impressions), len(clicks)
    )
    return len(impressions)


async def _recipients(session: AsyncSession) -> list[uuid.UUID]:
    """Customers a campaign could go to and be personalised for: email marketing and
    personalisation both granted (in the gateway's store), in id order."""
    granted = (
        select(Consent.customer_id)
        .where(
            Consent.granted.is_(True),
            Consent.purpose.in_(("email_marketing", "personalisation")),
        )
        .group_by(Consent.customer_id)
        .having(func.count() == 2)
        .order_by(Consent.customer_id)
    )
    return list(await session.scalars(granted))


async def _personal_lists(
    session: AsyncSession, customers: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[str]]:
    """Each recipient's first products of the model's list. Every list is read (one per
    customer), rather than the recipients' by id: a demo of 100,000 people would pass
    more ids than SQLite takes in one statement."""
    wanted = set(customers)
    rows = await session.execute(select(RecommendationList.customer_id, RecommendationList.items))
    return {
        customer_id: [str(item[0]) for item in (items or [])[:LIST_LENGTH]]
        for customer_id, items in rows
        if customer_id in wanted
    }


async def _popular(session: AsyncSession) -> list[str]:
    found = await session.scalars(
        select(RecommendationItem.product_id)
        .order_by(RecommendationItem.popularity.desc(), RecommendationItem.product_id)
        .limit(LIST_LENGTH)
    )
    return list(found)


def _email(
    customer_id: uuid.UUID, event_id: str, kind: str, at: datetime, extra: dict[str, Any]
) -> dict[str, Any]:
    """A SendGrid event as its webhook stores it (the send named by a custom argument)."""
    return {
        "customer_id": customer_id,
        "source": "sendgrid",
        "event_id": event_id,
        "type": kind,
        "occurred_at": at,
        "properties": {**extra, "custom_args": {"send_id": SEND_ID}},
        "received_at": at,
    }


def _order(customer_id: uuid.UUID, list_id: str, product_id: str, at: datetime) -> dict[str, Any]:
    """A Segment ``Order Completed`` call for the clicked product."""
    return {
        "customer_id": customer_id,
        "source": "segment",
        "event_id": f"{list_id}-order",
        "type": "track:Order Completed",
        "occurred_at": at,
        "properties": {
            "event": "Order Completed",
            "properties": {
                "order_id": f"{list_id}-order",
                "products": [{"product_id": product_id}],
            },
        },
        "received_at": at,
    }
