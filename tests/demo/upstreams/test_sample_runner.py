"""Starting and stopping the sample upstreams, in-process and as ``python -m``."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from demo.people.population import Person
from demo.upstreams.credentials import (
    DEMO_HUBSPOT_TOKEN,
    DEMO_SEGMENT_SPACE,
    DEMO_SEGMENT_TOKEN,
    DEMO_SHOPIFY_TOKEN,
)
from demo.upstreams.runner import SERVICE_NAMES, SampleUpstreams
from tests.conftest import REPO


def _free_ports(count: int) -> int:
    """A base port with ``count`` consecutive free ports after it."""
    for _ in range(50):
        base = random.randrange(20_000, 60_000)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free ports")


def test_a_thousand_people_start_well_under_two_seconds() -> None:
    # 1001 is not cached by the session's population(1000): this builds it afresh.
    started = time.perf_counter()
    with SampleUpstreams(size=1001) as upstreams:
        elapsed = time.perf_counter() - started
        assert set(upstreams.base_urls) == set(SERVICE_NAMES)
        assert all(url.startswith("http://127.0.0.1:") for url in upstreams.base_urls.values())
        assert len(set(upstreams.base_urls.values())) == 4
    assert elapsed < 2.0


def test_fixed_ports_and_restart() -> None:
    base = _free_ports(1)
    upstreams = SampleUpstreams(size=20, ports={"hubspot": base})
    upstreams.start()
    try:
        assert upstreams.base_urls["hubspot"] == f"http://127.0.0.1:{base}"
        assert httpx.get(f"{upstreams.base_urls['hubspot']}/_sample/calls").status_code == 200
    finally:
        upstreams.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{base}/_sample/calls")
    with upstreams:  # the same object starts again
        assert httpx.get(f"{upstreams.base_urls['shopify']}/_sample/calls").status_code == 200


def test_unknown_service_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown sample services"):
        SampleUpstreams(size=5, ports={"salesforce": 1})


async def test_async_context_manager() -> None:
    async with SampleUpstreams(size=20) as upstreams, httpx.AsyncClient() as client:
        answer = await client.get(f"{upstreams.base_urls['segment']}/_sample/faults")
        assert answer.json()["hang"] is False


def test_stop_is_prompt_with_hanging_requests_in_flight() -> None:
    upstreams = SampleUpstreams(size=20).start()
    upstreams.hubspot.faults.update(hang=True)
    outcomes: list[object] = []

    def client() -> None:
        try:
            outcomes.append(
                httpx.get(
                    f"{upstreams.base_urls['hubspot']}/crm/v3/objects/contacts/51000000", timeout=30
                ).status_code
            )
        except httpx.HTTPError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.perf_counter() + 2
    while upstreams.hubspot.held < 3 and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert upstreams.hubspot.held == 3
    started = time.perf_counter()
    upstreams.stop()
    assert time.perf_counter() - started < 1.0
    for thread in threads:
        thread.join(2)
    # Each held client got an answer (503) or a closed connection, not a 30 s wait.
    assert len(outcomes) == 3
    assert all(o == 503 or isinstance(o, httpx.HTTPError) for o in outcomes)


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _same_requests(urls: dict[str, str], person: Person) -> list[httpx.Request]:
    space = f"/v1/spaces/{DEMO_SEGMENT_SPACE}/collections/users/profiles"
    return [
        httpx.Request(
            "GET",
            f"{urls['hubspot']}/crm/v3/objects/contacts/{person.hubspot_id}",
            params={"properties": "email,phone,createdate,consent_analytics"},
            headers={"Authorization": f"Bearer {DEMO_HUBSPOT_TOKEN}"},
        ),
        httpx.Request(
            "GET",
            f"{urls['shopify']}/admin/api/2024-10/customers/"
            f"{person.shopify_id}/orders.json?status=any",
            headers={"X-Shopify-Access-Token": DEMO_SHOPIFY_TOKEN},
        ),
        httpx.Request(
            "GET",
            f"{urls['segment']}{space}/user_id:{person.segment_user_id}/events",
            params={"limit": 100},
            headers={"Authorization": f"Basic {_basic(DEMO_SEGMENT_TOKEN, '')}"},
        ),
    ]


def test_python_m_adapters_samples_serves_the_same_data(upstreams: SampleUpstreams) -> None:
    """Another process, another hash seed, a smaller population: person 7 is the
    same person with the same orders and events, byte for byte."""
    base = _free_ports(4)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "4242"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "demo.upstreams",
            "--base-port",
            str(base),
            "--size",
            "50",
            "--json",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        urls = json.loads(process.stdout.readline())
        assert urls == {
            name: f"http://127.0.0.1:{base + offset}" for offset, name in enumerate(SERVICE_NAMES)
        }
        person = upstreams.people[7]
        with httpx.Client(timeout=5) as client:
            theirs = [client.send(r) for r in _same_requests(urls, person)]
            ours = [client.send(r) for r in _same_requests(upstreams.base_urls, person)]
        assert [r.status_code for r in theirs] == [200, 200, 200]
        assert [r.content for r in theirs] == [r.content for r in ours]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(5) == 0
