"""Stall benchmark: /healthz latency while one hostile or heavy request runs.

    ./dev bench stall [--database sqlite|postgres] [--cache memory|redis] [--only NAME ...]

Starts, in separate processes, the sample upstreams and `gateway serve` (one worker,
a seeded database, an admin key), then sends each attack below as one request while
a prober (a process of its own) calls /healthz every 10 ms on a new connection. The
yardstick is the same probe with no attack running. Printed per attack: how the
gateway answered (status, code, seconds) and /healthz p50 / p99 / max during it; the
target is a max under 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx

from bench.support import harness
from bench.support.access import AUTH
from bench.support.harness import get_on_new_connection, spread

SIZE = 1000
TARGET_MS = 100.0
PROBE_EVERY_S = 0.01
INTROSPECTION = """query IntrospectionQuery { __schema { queryType { name } mutationType
{ name } subscriptionType { name } types { ...FullType } directives { name description
locations args { ...InputValue } } } }
fragment FullType on __Type { kind name description fields(includeDeprecated: true) {
name description args { ...InputValue } type { ...TypeRef } isDeprecated
deprecationReason } inputFields { ...InputValue } interfaces { ...TypeRef }
enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
possibleTypes { ...TypeRef } }
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType {
kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
} } } } } } } }"""


@dataclass(frozen=True, slots=True)
class Attack:
    name: str
    what: str
    body: Callable[[list[str], list[str]], dict[str, Any]]  # (ids, emails) -> JSON body


def _render(template: str) -> Callable[[list[str], list[str]], dict[str, Any]]:
    return lambda ids, emails: {
        "query": "query($e: String!, $t: String!) { customer(email: $e) "
        "{ render(template: $t) { body } } }",
        "variables": {"e": emails[0], "t": template},
    }


def _aliases(ids: list[str], emails: list[str]) -> dict[str, Any]:
    fields = " ".join(f'a{i}: customer(id: "{ids[i % len(ids)]}") {{ id }}' for i in range(10_000))
    return {"query": "{ " + fields + " }"}


def _mutations(ids: list[str], emails: list[str]) -> dict[str, Any]:
    fields = " ".join(f'm{i}: invalidateCustomer(id: "{uuid.uuid4()}")' for i in range(1000))
    return {"query": "mutation { " + fields + " }"}


def _renders(ids: list[str], emails: list[str]) -> dict[str, Any]:
    renders = " ".join(
        f'r{i}: render(template: "{{{{ first_name }}}}") {{ body }}' for i in range(49)
    )
    return {
        "query": "query($ids: [ID!]) { customers(ids: $ids) { " + renders + " } }",
        "variables": {"ids": ids},
    }


def _typenames(ids: list[str], emails: list[str]) -> dict[str, Any]:
    return {"query": "{ " + " ".join(f"t{i}: __typename" for i in range(40_000)) + " }"}


def _variables(ids: list[str], emails: list[str]) -> dict[str, Any]:
    many = [str(uuid.UUID(int=i)) for i in range(25_000)]
    return {
        "query": "query($ids: [ID!]) { customers(ids: $ids) { id } }",
        "variables": {"ids": many},
    }


def _batch(ids: list[str], emails: list[str]) -> dict[str, Any]:
    return {
        "query": "query($ids: [ID!]) { customers(ids: $ids) { id email firstName lastName "
        "locale phone lifecycleStage company city country consent { emailMarketing "
        "personalisation analytics } lifetimeValue { amount currency } orderCount "
        "identities { source externalId } } }",
        "variables": {"ids": ids},
    }


def _persisted(ids: list[str], emails: list[str]) -> dict[str, Any]:
    import hashlib

    query = "{ __typename }\n#" + secrets.token_hex(450_000)
    digest = hashlib.sha256(query.encode()).hexdigest()
    return {"query": query, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}


def _render_batch(ids: list[str], emails: list[str]) -> dict[str, Any]:
    return {
        "query": 'query($ids: [ID!]!) { renderBatch(name: "heavy", customerIds: $ids) '
        "{ customerId body error { code } } }",
        "variables": {"ids": ids},
    }


HEAVY = "{% for i in (1..5000) %}{{ i }}{% endfor %}"
BIG_SOURCE = "{% if first_name %}{{ first_name | upcase }}{% endif %}\n" * 1700
ATTACKS = [
    Attack(
        "loops",
        "150 sibling loops of 10,000 (6 KB inline template)",
        _render("{% for i in (1..10000) %}{% endfor %}" * 150),
    ),
    Attack("join", "{{ (1..3000000) | join }}", _render("{{ (1..3000000) | join }}")),
    Attack("renders", "customers(ids: 1000) { r0..r48: render }", _renders),
    Attack("aliases", "10,000 aliases of customer(id)", _aliases),
    Attack("mutations", "1,000 mutation fields", _mutations),
    Attack("typenames", "40,000 aliases of __typename", _typenames),
    Attack("variables", "customers(ids: $ids) with 25,000 ids", _variables),
    Attack("persisted", "a 900 KB persisted-query registration", _persisted),
    Attack(
        "introspection",
        "GraphiQL's introspection query",
        lambda ids, emails: {"query": INTROSPECTION},
    ),
    Attack("compile", "a 95 KB inline template (compile and analysis)", _render(BIG_SOURCE)),
    Attack(
        "syntax",
        "a syntax error at the end of an 85 KB template",
        _render("{{ first_name }} " * 5000 + "{% if x %}"),
    ),
    Attack("batch", "customers(ids: 1000) with profile and CRM fields (cached)", _batch),
    Attack("renderBatch", "renderBatch over 1,000 customers, 5,000 loop steps each", _render_batch),
]


def _probe(port: int, stop: Event, out: Any) -> None:
    """In a process of its own: time /healthz until told to stop; each probe is
    (start, end) on the monotonic clock, which every process on the machine shares."""
    probes: list[tuple[float, float]] = []
    while not stop.is_set():
        begin = time.monotonic()
        try:
            get_on_new_connection(port, "/healthz", timeout=60)
        except OSError:
            probes.append((begin, float("inf")))  # no answer at all: worse than any figure
        else:
            probes.append((begin, time.monotonic()))
        time.sleep(PROBE_EVERY_S)
    out.put(probes)


@contextmanager
def _prober(port: int) -> Iterator[list[tuple[float, float]]]:
    context = multiprocessing.get_context("spawn")
    stop, out = context.Event(), context.Queue()
    process = context.Process(target=_probe, args=(port, stop, out), daemon=True)
    process.start()
    found: list[tuple[float, float]] = []
    try:
        yield found
    finally:
        stop.set()
        found.extend(out.get(timeout=60))
        process.join(10)


def _during(probes: list[tuple[float, float]], start: float, end: float) -> list[float]:
    """Latencies (ms) of the probes that overlapped [start, end]."""
    return [(e - b) * 1000 for b, e in probes if b <= end and e >= start]


def _figures(latencies: list[float]) -> str:
    p50, p99, most = spread(latencies)
    return f"n {len(latencies):4d}  p50 {p50:6.1f}  p99 {p99:6.1f}  max {most:7.1f} ms"


def _outcome(response: httpx.Response | None, error: str | None) -> str:
    if response is None:
        return f"no answer ({error})"
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} (not JSON)"
    errors = body.get("errors") if isinstance(body, dict) else None
    codes = sorted({str((e.get("extensions") or {}).get("code")) for e in errors or []})
    message = (errors[0].get("message") or "")[:70] if errors else ""
    return f"{response.status_code} {','.join(codes) or 'ok'} {message}".rstrip()


def run(database: str, cache: str, redis_url: str, only: list[str], timeout: float) -> None:
    attacks = [a for a in ATTACKS if not only or a.name in only]
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.database(database, "gateway_bench_stall", Path(tmp)) as database_url,
    ):
        asyncio.run(harness.seed(database_url, SIZE))
        ids, emails = asyncio.run(harness.customers(database_url, SIZE))
        if cache == "redis":
            subprocess.run(
                ["redis-cli", "-u", redis_url, "flushdb"], check=True, stdout=subprocess.DEVNULL
            )
        with harness.sample_upstreams(SIZE) as samples_port:
            upstreams = harness.upstreams_file(Path(tmp), samples_port, 300.0)
            cache_url = redis_url if cache == "redis" else "memory://"
            with harness.serve(harness.gateway_env(database_url, cache_url, upstreams)) as base:
                _prepare(base, ids)
                _report(base, attacks, ids, emails, database, cache, timeout)


def _prepare(base: str, ids: list[str]) -> None:
    """Warm the upstream cache for every customer and save the heavy template."""
    with httpx.Client(base_url=base, headers=AUTH, timeout=120) as client:
        client.post(
            "/graphql",
            json={
                "query": 'mutation($s: String!) { saveTemplate(name: "heavy", source: $s) '
                "{ version } }",
                "variables": {"s": HEAVY},
            },
        )
        for start in range(0, len(ids), 50):
            client.post(
                "/graphql",
                json={
                    "query": "query($ids: [ID!]) { customers(ids: $ids) { lifecycleStage } }",
                    "variables": {"ids": ids[start : start + 50]},
                },
            )


def _report(
    base: str,
    attacks: list[Attack],
    ids: list[str],
    emails: list[str],
    database: str,
    cache: str,
    timeout: float,
) -> None:
    print(
        f"stall benchmark: gateway serve (1 worker), {database}, {cache} cache; "
        f"/healthz every {PROBE_EVERY_S * 1000:.0f} ms on a new connection; target max "
        f"< {TARGET_MS:.0f} ms"
    )
    windows: list[tuple[Attack, float, float, str]] = []
    with (
        _prober(int(base.rsplit(":", 1)[1])) as probes,
        httpx.Client(base_url=base, headers=AUTH, timeout=timeout) as client,
    ):
        time.sleep(1)  # the prober's own start-up
        idle_from = time.monotonic()
        time.sleep(3)
        idle_to = time.monotonic()
        for attack in attacks:
            body = attack.body(ids, emails)
            response, error = None, None
            started = time.monotonic()
            try:
                response = client.post("/graphql", json=body)
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            ended = time.monotonic()
            windows.append((attack, started, ended, _outcome(response, error)))
            time.sleep(0.3)  # the next attack starts on a quiet worker
    idle = _during(probes, idle_from, idle_to)
    print(f"  {'yardstick (no attack)':<14} {_figures(idle)}")
    worst = 0.0
    for attack, started, ended, outcome in windows:
        # Probes in flight while it ran, and those starting within 100 ms of its answer
        # (what the worker did right after answering counts too).
        during = _during(probes, started, ended + 0.1) or [0.0]
        worst = max(worst, max(during))
        verdict = "ok " if max(during) < TARGET_MS else "SLOW"
        print(
            f"  {attack.name:<14} {_figures(during)}  {verdict}  "
            f"{ended - started:6.2f} s  {outcome}"
        )
        print(f"  {'':<14} ({attack.what})")
    print(
        f"worst /healthz during an attack: {worst:.1f} ms; yardstick max "
        f"{max(idle):.1f} ms; ratio {worst / max(max(idle), 0.001):.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--cache", choices=["memory", "redis"], default="memory")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
        + "/13",
    )
    parser.add_argument("--only", nargs="*", default=[], choices=[a.name for a in ATTACKS])
    parser.add_argument("--timeout", type=float, default=90.0, help="Per attack, seconds.")
    args = parser.parse_args()
    run(args.database, args.cache, args.redis_url, args.only, args.timeout)


if __name__ == "__main__":
    main()
