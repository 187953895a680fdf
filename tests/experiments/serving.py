"""What the experiment tests do through the API: experiments saved one at a time (each
ended afterwards), recommendations asked for, clicks as SendGrid reports them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from starlette.applications import Starlette

from demo.people.behaviour import behaviour
from demo.people.orders import orders_for
from demo.people.population import Person
from demo.seed import customer_id_for
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.settings import load_settings
from tests.conftest import FAST
from tests.gql_client import gql
from tests.ingest.webhook_requests import realtime_app

WINDOW_HOURS = 1.0
SAVE = """
mutation($name: String!, $variants: [VariantInput!]!, $start: DateTime!, $end: DateTime!) {
  saveExperiment(name: $name, variants: $variants, start: $start, end: $end) {
    name running variants { name strategy weight }
  }
}
"""
RECOMMEND = """
query($id: ID!, $send: String) {
  customer(id: $id) {
    experiments { experiment variant strategy }
    recommendations(limit: 3, sendId: $send) { id url listId reason }
  }
}
"""


@dataclass
class Served:
    app: Starlette
    client: httpx.AsyncClient
    samples: SampleUpstreams
    url: str


def serving_app(url: str, samples: SampleUpstreams, **settings: Any) -> Starlette:
    tables = {name: dict(FAST) for name in samples.base_urls}
    return realtime_app(
        load_settings(
            database_url=url,
            cache_url="memory://",
            conversion_window_hours=WINDOW_HOURS,
            experiments_ttl_s=0,
            **settings,
        ),
        upstreams=sample_upstreams_config(samples.base_urls, tables),
    )


@asynccontextmanager
async def running_experiment(
    client: httpx.AsyncClient, variants: list[tuple[str, str, float]]
) -> AsyncIterator[str]:
    """An experiment running from now for an hour, under a fresh name; ended afterwards,
    so the next test's may start (windows never overlap)."""
    name = f"exp-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC)
    given = [{"name": n, "strategy": s.upper(), "weight": w} for n, s, w in variants]
    body = await gql(
        client,
        SAVE,
        name=name,
        variants=given,
        start=start.isoformat(),
        end=(start + timedelta(hours=1)).isoformat(),
    )
    assert "errors" not in body, body
    try:
        yield name
    finally:
        ended = await gql(
            client,
            SAVE,
            name=name,
            variants=given,
            start=start.isoformat(),
            end=datetime.now(UTC).isoformat(),
        )
        assert "errors" not in ended, ended


def person_with_history(samples: SampleUpstreams, *, consent: bool = True) -> list[Person]:
    """People with orders and behaviour, with (or without) personalisation consent."""
    return [
        p
        for p in samples.people
        if p.personalisation_consent == consent and orders_for(p) and behaviour(p).events
    ]


async def recommend(
    client: httpx.AsyncClient, person: Person, send: str | None = None
) -> dict[str, Any]:
    body = await gql(client, RECOMMEND, id=str(customer_id_for(person)), send=send)
    assert "errors" not in body, body
    customer: dict[str, Any] = body["data"]["customer"]
    return customer


def click(email: str, url: str, send: str | None = None, at: float | None = None) -> dict[str, Any]:
    """A SendGrid click event on ``url``, with the send as its custom argument."""
    event: dict[str, Any] = {
        "email": email,
        "timestamp": int(at if at is not None else time.time()),
        "event": "click",
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": f"{uuid.uuid4().hex[:22]}.filter0001.1.0",
        "url": url,
    }
    if send is not None:
        event["send_id"] = send
    return event


async def until(moment: float) -> None:
    """Until the clock reads ``moment`` (an order dated then is no later than its arrival)."""
    await asyncio.sleep(max(0.0, moment - time.time()) + 0.05)
