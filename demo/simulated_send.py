"""``gateway simulate-send``: a campaign sent to the demo's customers in an experiment, and
what the experiment then shows.

The demo database is migrated, seeded and its model built (as ``gateway demo`` does), the
sample upstreams and the gateway are started on loopback, and the experiment
``simulated-send`` is saved: half the customers (a hash) served popular products, half
the model's personal ones. The sample ESP (demo/sample_esp.py) renders the campaign for
every customer not suppressed through ``renderBatch``, and each recipient behaves as
their taste says (demo/people/taste.py): they open with ``OPEN``; they click a product in
one of their two favourite categories with ``CLICK_MATCH``, another with ``CLICK_OTHER``
(the links in order, one click at most); a click on a product they like leads to an
order with ``ORDER_MATCH``, another with ``ORDER_OTHER``; a few openers unsubscribe.
Their events are posted as signed SendGrid batches, the orders as Shopify webhooks, each
dated by its step (delivered, opened, clicked, ordered), a second apart after the send
and only once that second has passed: an ESP and a shop report what has happened, so
nothing is dated after it is posted (dated hours ahead, a send's future orders counted as
the conversions of any send within those hours). Then the experiment's results and the
send's metrics are read back through the API and printed.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from demo.people.catalogue import catalogue
from demo.people.population import Person
from demo.people.taste import taste
from demo.sample_esp import TEMPLATE, Link, SampleEsp, sendgrid_event
from demo.seed import customer_id_for
from gateway.settings import Settings

EXPERIMENT = "simulated-send"
CAMPAIGN = "simulated-campaign"
OPEN = 0.45
CLICK_MATCH = 0.20
CLICK_OTHER = 0.04
ORDER_MATCH = 0.35
ORDER_OTHER = 0.10
UNSUBSCRIBE = 0.01
VARIANTS = [
    {"name": "control", "strategy": "POPULARITY", "weight": 1.0},
    {"name": "personal", "strategy": "MODEL", "weight": 1.0},
]
_SAVE = """
mutation($name: String!, $variants: [VariantInput!]!, $start: DateTime!, $end: DateTime!) {
  saveExperiment(name: $name, variants: $variants, start: $start, end: $end) { name }
}
"""
_RESULTS = """
query($name: String!, $metric: ExperimentMetric!, $send: String!) {
  experiment(name: $name, metric: $metric) {
    comparedVariant liftVsControl pValue
    variants { name strategy customers impressions clicks ctr conversions conversionRate
               ciLow ciHigh liftVsControl pValue }
  }
  campaign(sendId: $send) { delivered opened clicked converted unsubscribed
                            openRate clickThroughRate conversionRate unsubscribeRate }
}
"""


async def run_send(esp: SampleEsp, people: Sequence[Person], send_id: str, seed: int) -> str:
    """The whole send against a running gateway; returns the report to print."""
    start = datetime.now(UTC)
    await esp.graphql(
        _SAVE,
        name=EXPERIMENT,
        variants=VARIANTS,
        start=start.isoformat(),
        end=(start + timedelta(days=7)).isoformat(),
    )
    await esp.graphql(
        "mutation($n: String!, $s: String!) { saveTemplate(name: $n, source: $s) { version } }",
        n=CAMPAIGN,
        s=TEMPLATE,
    )
    recipients = await _recipients(esp, people)
    emails = await esp.render(CAMPAIGN, [str(customer_id_for(p)) for p in recipients], send_id)
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    orders: list[tuple[Person, str, float]] = []
    steps = _Steps(math.floor(time.time()))
    for person in recipients:
        links = emails.get(str(customer_id_for(person)), [])
        events += _behaviour(person, links, steps, send_id, rng, orders)
    await _until(steps.clicked)
    stored = await esp.report(events)
    await _until(steps.ordered)
    for person, product, at in orders:
        await esp.order(person, product, at)
    data = await esp.graphql(_RESULTS, name=EXPERIMENT, metric="CLICK_THROUGH", send=send_id)
    converted = await esp.graphql(_RESULTS, name=EXPERIMENT, metric="CONVERSION", send=send_id)
    return _report(send_id, len(recipients), stored, len(orders), data, converted)


async def _recipients(esp: SampleEsp, people: Sequence[Person]) -> list[Person]:
    """Everyone the ESP may mail: the gateway says who is suppressed."""
    mailable: list[Person] = []
    for start in range(0, len(people), 1000):
        part = people[start : start + 1000]
        data = await esp.graphql(
            "query($ids: [ID!]) { customers(ids: $ids) { suppressed } }",
            ids=[str(customer_id_for(p)) for p in part],
        )
        mailable += [
            p for p, c in zip(part, data["customers"], strict=True) if c and not c["suppressed"]
        ]
    return mailable


class _Steps:
    """When each step of a recipient's behaviour is dated: whole seconds after the send,
    one apart (SendGrid's timestamps are whole seconds, and an order converts a click
    only when it comes strictly after it)."""

    def __init__(self, sent: int) -> None:
        self.delivered = sent + 1
        self.opened = sent + 2
        self.clicked = sent + 3  # and an unsubscribe, after the open
        self.ordered = sent + 4


async def _until(second: int) -> None:
    """Wait until ``second`` (epoch) has begun: what is dated then may be posted."""
    await asyncio.sleep(max(0.0, second + 0.01 - time.time()))


def _behaviour(
    person: Person,
    links: Sequence[Link],
    steps: _Steps,
    send_id: str,
    rng: random.Random,
    orders: list[tuple[Person, str, float]],
) -> list[dict[str, Any]]:
    """What one recipient does with the email, as SendGrid events."""
    events = [sendgrid_event(person, "delivered", steps.delivered, send_id)]
    if rng.random() >= OPEN:
        return events
    events.append(sendgrid_event(person, "open", steps.opened, send_id))
    liked = set(taste(person).categories[:2])
    for link in links:
        matches = catalogue().by_id[int(link.product_id)].category in liked
        if rng.random() < (CLICK_MATCH if matches else CLICK_OTHER):
            events.append(sendgrid_event(person, "click", steps.clicked, send_id, url=link.url))
            if rng.random() < (ORDER_MATCH if matches else ORDER_OTHER):
                orders.append((person, link.product_id, steps.ordered))
            return events
    if rng.random() < UNSUBSCRIBE:
        events.append(sendgrid_event(person, "unsubscribe", steps.clicked, send_id))
    return events


def _report(
    send_id: str,
    recipients: int,
    stored: int,
    orders: int,
    click_through: dict[str, Any],
    conversion: dict[str, Any],
) -> str:
    campaign = click_through["campaign"]
    lines = [
        f"Send {send_id}: {recipients} recipients (the others suppressed); {stored} SendGrid "
        f"events stored, {orders} orders placed after clicks.",
        f"  delivered {campaign['delivered']}, open rate {_pct(campaign['openRate'])}, "
        f"click-through {_pct(campaign['clickThroughRate'])}, conversion "
        f"{_pct(campaign['conversionRate'])}, unsubscribes {_pct(campaign['unsubscribeRate'])}",
        f"Experiment {EXPERIMENT}:",
        f"  {'variant':<10}{'strategy':<12}{'customers':>10}{'lists':>7}{'clicks':>8}"
        f"{'CTR':>8}  {'95% CI':<17}{'orders':>7}{'conv.':>8}  {'95% CI':<17}",
    ]
    conversions = {v["name"]: v for v in conversion["experiment"]["variants"]}
    for variant in click_through["experiment"]["variants"]:
        other = conversions[variant["name"]]
        lines.append(
            f"  {variant['name']:<10}{variant['strategy'].lower():<12}{variant['customers']:>10}"
            f"{variant['impressions']:>7}{variant['clicks']:>8}{_pct(variant['ctr']):>8}  "
            f"{_interval(variant):<17}{other['conversions']:>7}"
            f"{_pct(other['conversionRate']):>8}  {_interval(other):<17}"
        )
    for label, found in (("click-through", click_through), ("conversion", conversion)):
        experiment = found["experiment"]
        lift, p = experiment["liftVsControl"], experiment["pValue"]
        lines.append(
            f"  {label}: {experiment['comparedVariant']} vs control "
            + (f"{lift:+.0%}" if lift is not None else "n/a")
            + (f" (two-proportion z-test p = {p:.2g})" if p is not None else "")
        )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _interval(variant: dict[str, Any]) -> str:
    return f"[{variant['ciLow']:.1%}, {variant['ciHigh']:.1%}]"


def simulate(settings: Settings, customers: int, seed: int, send_id: str | None) -> str:
    """Seed, serve, send; the report. Everything it starts is stopped before it returns."""
    from demo.served_gateway import served_gateway

    send = send_id or f"simulated-{datetime.now(UTC):%Y%m%d-%H%M%S}"

    async def send_through(esp: SampleEsp, people: tuple[Person, ...]) -> str:
        return await run_send(esp, people, send, seed)

    return served_gateway(settings, customers, send_through)
