"""Send benchmark: a campaign's whole send through renderBatch, against the upstreams' limits.

    ./dev bench send [--customers 10000] [--page 500] [--latency-ms 50] [--plan plus]

The gateway runs in-process (ASGI) on a seeded SQLite database against the sample
upstreams in a process of their own on loopback, each answering after ``--latency-ms``.
The shop is the GraphQL Admin API shape, with its cost bucket enforced as Shopify does
(``--plan plus``: 2,000 points restoring 1,000/s; ``standard``: 1,000 restoring 100/s).
The template reads the profile, CRM fields, the last 3 orders (name and total), engagement and 4
recommendations. The send renders every customer once, in pages of ``--page`` (cold:
every upstream read), then again (warm: the upstream cache).

The yardstick is the physical limit of the send (bench/support/send_limits.py): for
each upstream, the time the least the send must ask of it (calls, or for the shop the
points of a query reading only the orders' names and totals) needs at the upstream's
published rate limit (HubSpot batch read: 100 calls per 10 s; Shopify: the plan's
bucket and restore rate; Segment Profiles: 100 calls/s), the slowest upstream setting
the limit. It is computed from the send, not from what the gateway asked: over-reading
does not raise it. Printed: customers/s cold and warm, calls per upstream, the limit,
the ratio cold time / limit, the time what the gateway did ask would need, and the
upstreams' rate-limit answers: the samples enforce their limits as the real services do
(HubSpot and Segment a rolling window, answering 429 beyond it; the shop its bucket,
answering THROTTLED), so every one counted is a call the gateway should not have made.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from bench.support.access import AUTH, create_bench_key
from bench.support.harness import sample_upstreams
from bench.support.send_limits import Need, least_asked, seconds_at_limit
from demo.people.population import population
from demo.seed import seed
from demo.upstreams.runner import SERVICE_NAMES
from demo.upstreams.shopify.cost import PLANS
from demo.wiring import sample_upstreams_config
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.db.models import Customer
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.in_process import asgi, lifespan

SHOWN_ORDERS = 3  # the newest orders the template shows (name and total): its `limit: 3`
TEMPLATE = """<p>Hi {{ first_name | default: "there" }}
{%- if company %} of {{ company }}{% endif %} ({{ lifecycle_stage }}),</p>
<ul>{% for order in orders limit: 3 %}<li>{{ order.name }}: {{ order.total_price.amount }}
{{ order.total_price.currency }}</li>{% endfor %}</ul>
<p>{{ engagement.sessions_30d }} visits this month.</p>
<ul>{% for p in recommendations limit: 4 %}<li>{{ p.title }}</li>{% endfor %}</ul>"""
BATCH = """query($n: String!, $ids: [ID!]!) { renderBatch(name: $n, customerIds: $ids) {
  customerId body error { code message } } }"""
UPSTREAMS = ("hubspot", "shopify", "segment")
_CPU: list[float] = []  # the gateway process's CPU seconds of each send (cold, warm)
_WORKERS_CPU: list[float] = []  # and its render workers' (child processes)


def _children_cpu() -> float:
    """CPU seconds of this process's render workers (not the samples' process); Linux."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"render_worker" in command:  # ppid
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def _send(client: httpx.AsyncClient, ids: list[str], page: int) -> tuple[float, int]:
    """Every customer once, page after page; the time and the renders that failed."""
    failed = 0
    started = time.perf_counter()
    cpu, workers = time.process_time(), _children_cpu()
    for start in range(0, len(ids), page):
        response = await client.post(
            "/graphql",
            json={"query": BATCH, "variables": {"n": "send", "ids": ids[start : start + page]}},
        )
        body = response.json()
        if "errors" in body:
            raise SystemExit(f"renderBatch failed: {body['errors'][0]['message']}")
        errors = [item["error"] for item in body["data"]["renderBatch"] if item["error"]]
        if errors and not failed:
            print(f"  first failed render: {errors[0]['code']}: {errors[0]['message'][:160]}")
        failed += len(errors)
    _CPU.append(time.process_time() - cpu)
    _WORKERS_CPU.append(_children_cpu() - workers)
    return time.perf_counter() - started, failed


async def _calls(control: httpx.AsyncClient, urls: dict[str, str]) -> dict[str, int]:
    return {
        name: (await control.get(f"{urls[name]}/_sample/calls")).json()["total"]
        for name in UPSTREAMS
    }


@contextlib.contextmanager
def _profiled(path: str | None) -> Iterator[None]:
    """cProfile over the block, its statistics written to ``path`` (none without)."""
    if path is None:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(path)


async def run(
    customers: int, page: int, latency_ms: int, plan: str, profile: str | None = None
) -> None:
    # The samples in a process of their own: in this one they would take the GIL from
    # the gateway being measured.
    load_before = os.getloadavg()
    people = population(customers)
    with sample_upstreams(customers, limits=True) as port, tempfile.TemporaryDirectory() as tmp:
        urls = {name: f"http://127.0.0.1:{port + n}" for n, name in enumerate(SERVICE_NAMES)}
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url)
        await seed(create_sessionmaker(engine), people)
        await create_bench_key(create_sessionmaker(engine))
        async with engine.connect() as connection:
            ids = [str(i) for i in await connection.scalars(select(Customer.id))][:customers]
        await engine.dispose()
        # Budgets long enough to wait for the shop's bucket; breakers that a busy machine
        # does not open; answers fresh for the whole send (a cold send on a loaded machine
        # outlived the default 300 s, and its warm send then asked again).
        patient = {
            "timeout_s": 30,
            "deadline_s": 300,
            "breaker": {"failure_threshold": 1000},
            "cache": {"ttl_s": 3600.0, "stale_ttl_s": 86_400.0},
        }
        tables: dict[str, dict[str, Any]] = dict.fromkeys(urls, patient)
        figures = PLANS[plan]
        tables["shopify"] = {
            **patient,
            "api": "graphql",
            "graphql": {"bucket_size": figures.maximum, "restore_rate": figures.restore_rate},
        }
        config = sample_upstreams_config(urls, tables)
        app = create_app(load_settings(database_url=url), upstreams=config)
        async with (
            httpx.AsyncClient(timeout=30) as control,
            lifespan(app),
            httpx.AsyncClient(
                transport=asgi(app), base_url="http://gw", timeout=3600, headers=AUTH
            ) as client,
        ):
            await control.put(f"{urls['shopify']}/_sample/graphql", json={"plan": plan})
            for name in UPSTREAMS:
                await control.put(f"{urls[name]}/_sample/faults", json={"latency_ms": latency_ms})
            saved = await client.post(
                "/graphql",
                json={
                    "query": 'mutation($s: String!) { saveTemplate(name: "send", source: $s)'
                    " { version } }",
                    "variables": {"s": TEMPLATE},
                },
            )
            assert "errors" not in saved.json(), saved.text
            for name in UPSTREAMS:
                await control.delete(f"{urls[name]}/_sample/calls")
            cold, cold_failed = await _send(client, ids, page)
            calls = await _calls(control, urls)
            shop = (await control.get(f"{urls['shopify']}/_sample/graphql")).json()
            refused = {
                name: (await control.get(f"{urls[name]}/_sample/rate_limit")).json()["refused"]
                for name in ("hubspot", "segment")
            }
            with _profiled(profile):
                warm, warm_failed = await _send(client, ids, page)
            after = await _calls(control, urls)
            warm_calls = {name: after[name] - calls[name] for name in UPSTREAMS}
    plan_figures = PLANS[plan]
    least = least_asked(people, SHOWN_ORDERS)
    limits = seconds_at_limit(least, plan_figures)
    asked = seconds_at_limit(
        Need(calls["hubspot"], shop["points_spent"], calls["segment"]), plan_figures
    )
    slowest = max(limits, key=lambda name: limits[name])
    print(
        f"send benchmark: {customers} customers in pages of {page}, upstreams at "
        f"{latency_ms} ms a call, shop on the {plan} plan; load average before "
        f"{_load(load_before)}, after {_load(os.getloadavg())}"
    )
    print(
        f"  cold: {cold:8.2f} s  {customers / cold:8.0f} customers/s  failed renders {cold_failed}"
    )
    print(
        f"  warm: {warm:8.2f} s  {customers / warm:8.0f} customers/s  failed renders {warm_failed}"
    )
    print(
        f"  gateway process CPU: cold {_CPU[0]:.1f} s, warm {_CPU[1]:.1f} s "
        f"({1000 * _CPU[1] / customers:.2f} ms a customer warm); its render workers: cold "
        f"{_WORKERS_CPU[0]:.1f} s, warm {_WORKERS_CPU[1]:.1f} s"
    )
    print(f"  upstream calls, cold: {calls}  warm: {warm_calls}")
    print(
        f"  shop query points spent: {shop['points_spent']} (the least the template's data "
        f"costs: {least.shop_points})"
    )
    print(
        f"  rate-limit answers, cold: hubspot {refused['hubspot']} (429), shopify "
        f"{shop['throttled']} (THROTTLED), segment {refused['segment']} (429)  (target: 0)"
    )
    print(
        "  time each upstream needs at its rate limit for the least the send asks: "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in limits.items())
    )
    print(
        "  ... and for what the gateway asked: "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in asked.items())
    )
    limit = limits[slowest]
    print(f"physical limit: {limit:.2f} s ({slowest})")
    ratio = cold / limit if limit > 0 else float("inf")
    print(f"ratio cold send / physical limit: {ratio:.2f}  (target <= 1.25)")
    print(f"warm: {customers / warm:.0f} customers/s  (target >= 2,000)")


def _load(figures: tuple[float, float, float]) -> str:
    return " ".join(f"{f:.2f}" for f in figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--page", type=int, default=500)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--plan", choices=sorted(PLANS), default="plus")
    parser.add_argument(
        "--profile-warm", metavar="PATH", help="write cProfile statistics of the warm send"
    )
    args = parser.parse_args()
    asyncio.run(run(args.customers, args.page, args.latency_ms, args.plan, args.profile_warm))


if __name__ == "__main__":
    main()
