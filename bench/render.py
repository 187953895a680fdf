"""Render benchmark: renderBatch of a stored template over 1,000 customers, warm.

    ./dev bench render [--customers 1000] [--runs 5]

The gateway runs in-process (ASGI) against the sample upstreams on loopback, on a
seeded SQLite database. One cold renderBatch fills the gateway's upstream cache
(there is no cross-request loader cache: DataLoaders live for one request); the
warm runs then read every upstream answer from that cache, so they measure the
gateway's own work: GraphQL, the profile read, cache reads, context building and
Liquid (in the render worker processes, beside the event loop). The baseline is
python-liquid rendering the same parsed template over the same contexts prepared as
plain dicts, in this process. Printed: renders/s for each and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import liquid
from sqlalchemy import select

from bench.support.access import AUTH, create_bench_key
from demo.seed import seed
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.db.models import Customer
from gateway.services import Services
from gateway.settings import load_settings
from gateway.templates import render
from gateway.upstreams.order_reads import EVERYTHING
from resolvers.app import create_app
from resolvers.graphql.loaders import Loaders
from tests.in_process import asgi, lifespan, services_of

TEMPLATE = """<h1>Hi {{ first_name | default: "there" }},</h1>
{% if lifecycle_stage == "customer" %}<p>Welcome back
{%- if company %} from {{ company }}{% endif %}.</p>{% endif %}
<p>You have placed {{ order_count }} orders worth
{{ lifetime_value.amount }} {{ lifetime_value.currency }}.</p>
<ul>{% for order in orders limit: 3 %}
  <li>{{ order.name }}, {{ order.created_at | date: "%b %d, %Y" }}:
  {{ order.total_price.amount }}</li>
{%- endfor %}</ul>
{% if cart and cart.items.size > 0 %}<p>Still in your cart:</p><ul>{% for item in cart.items %}
  <li>{{ item.title }} x{{ item.quantity }}</li>{% endfor %}</ul>{% endif %}
<p>{{ engagement.sessions_30d }} visits this month.</p>"""
FILL = 50
BATCH = """query($n: String!, $ids: [ID!]!) { renderBatch(name: $n, customerIds: $ids) {
  customerId body error { code message } } }"""


async def _batch(client: httpx.AsyncClient, ids: list[str]) -> float:
    started = time.perf_counter()
    response = await client.post(
        "/graphql", json={"query": BATCH, "variables": {"n": "bench", "ids": ids}}
    )
    elapsed = time.perf_counter() - started
    body = response.json()
    if "errors" in body:
        raise SystemExit(f"renderBatch failed: {body['errors'][0]['message']}")
    failed = [i for i in body["data"]["renderBatch"] if i["error"]]
    if failed:
        raise SystemExit(f"{len(failed)} renders failed, e.g. {failed[0]['error']}")
    return elapsed


async def _fill(client: httpx.AsyncClient, ids: list[str]) -> float:
    """A cold batch, again until every render succeeds: on a busy machine an upstream
    call may time out, and what is measured afterwards is the warm cache."""
    for _ in range(4):
        try:
            return await _batch(client, ids)
        except SystemExit:
            continue
    return await _batch(client, ids)


async def _contexts(
    services: Services, ids: list[str], spent: dict[str, float]
) -> list[dict[str, Any]]:
    """The render contexts as plain dicts, from the warm cache, for the baseline; the
    time each step takes goes into ``spent``, to show where a warm batch goes."""
    compiled = await services.renderer.compile(TEMPLATE, render.RenderFormat.HTML)
    started = time.perf_counter()
    profiles = list((await services.customers.get_many([uuid.UUID(i) for i in ids])).values())
    spent["profile read (SQL)"] = time.perf_counter() - started
    loaders = Loaders(services.federation)
    names = sorted(compiled.loaders)
    started = time.perf_counter()
    columns = [
        # Orders are loaded per need; a template may read any of them (as renders do).
        await loaders.orders.load_many([(p, EVERYTHING) for p in profiles])
        if name == "orders"
        else await getattr(loaders, name).load_many(profiles)
        for name in names
    ]
    spent["upstream cache reads"] = time.perf_counter() - started
    now = datetime.now(UTC)
    started = time.perf_counter()
    contexts = [
        render.customer_context(
            p, {n: c[i].unwrap() for n, c in zip(names, columns, strict=True)}, now, compiled.fields
        )
        for i, p in enumerate(profiles)
    ]
    spent["context building"] = time.perf_counter() - started
    return contexts


async def run(customers: int, runs: int) -> None:
    with SampleUpstreams(size=customers) as samples, tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url)
        await seed(create_sessionmaker(engine), samples.people)
        await create_bench_key(create_sessionmaker(engine))
        async with engine.connect() as connection:
            ids = [str(i) for i in await connection.scalars(select(Customer.id))][:customers]
        await engine.dispose()
        # Patient upstream budgets: the cold fill is not measured, and on a busy machine
        # the default 2 s timeouts (and the breakers they open) would fail it.
        patient = {"timeout_s": 20, "deadline_s": 60, "breaker": {"failure_threshold": 1000}}
        config = sample_upstreams_config(
            samples.base_urls, dict.fromkeys(samples.base_urls, patient)
        )
        app = create_app(load_settings(database_url=url), upstreams=config)
        async with lifespan(app):
            services = services_of(app)
            transport = asgi(app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://gw", timeout=120, headers=AUTH
            ) as client:
                saved = await client.post(
                    "/graphql",
                    json={
                        "query": 'mutation($s: String!) { saveTemplate(name: "bench", source: $s)'
                        " { version } }",
                        "variables": {"s": TEMPLATE},
                    },
                )
                assert "errors" not in saved.json(), saved.text
                # Fill the cache in chunks: a cold 1,000 would put 2,000 concurrent
                # calls on the one-call-per-customer upstreams (orders, events).
                cold = sum(
                    [await _fill(client, ids[i : i + FILL]) for i in range(0, len(ids), FILL)]
                )
                upstream_calls = {
                    s: getattr(samples, s).calls.total for s in ("hubspot", "shopify", "segment")
                }
                warm = [await _batch(client, ids) for _ in range(runs)]
                warm_calls = {
                    s: getattr(samples, s).calls.total - upstream_calls[s] for s in upstream_calls
                }
            spent: dict[str, float] = {}
            contexts = await _contexts(services, ids, spent)
        # The yardstick: python-liquid itself, in this process, on prepared dicts.
        template = liquid.Environment(autoescape=True).from_string(TEMPLATE)
        baseline = []
        for _ in range(runs):
            started = time.perf_counter()
            for context in contexts:
                template.render(context)
            baseline.append(time.perf_counter() - started)
    gateway_rate = customers / statistics.median(warm)
    liquid_rate = len(contexts) / statistics.median(baseline)
    print(f"render benchmark: {customers} customers, stored HTML template using all upstreams")
    print(f"  cold, in batches of {FILL} (fetch upstreams): {cold:6.2f} s  calls {upstream_calls}")
    print(
        f"  warm renderBatch (upstream cache):    {statistics.median(warm):6.2f} s  "
        f"median of {runs}; upstream calls while warm: {warm_calls}"
    )
    print(f"  gateway renderBatch:      {gateway_rate:9.0f} renders/s")
    print(f"  python-liquid, dicts:     {liquid_rate:9.0f} renders/s")
    print(f"ratio gateway / bare python-liquid: {gateway_rate / liquid_rate:.2f}")
    spent["liquid rendering"] = statistics.median(baseline)
    print("where a warm batch goes (one pass, same customers):")
    for step, seconds in spent.items():
        print(f"  {step:<22} {seconds:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.customers, args.runs))


if __name__ == "__main__":
    main()
