"""A demo gateway served on loopback inside this process, with the sample upstreams and the
sample ESP wired to it, for as long as one piece of work runs (``gateway simulate-send``).

The database is migrated and seeded, its model built, as ``gateway demo`` does; the
gateway accepts the demo's key and the sample ESP's webhooks (keys made for this run).
Served over real HTTP on a free port, so the ESP's requests take the same path a real
ESP's do.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import uvicorn
from pydantic import SecretStr

from demo.people.population import Person
from demo.sample_esp import SampleEsp
from demo.upstreams.runner import SERVICE_NAMES, SampleUpstreams
from demo.wiring import DEMO_API_KEY, prepare, sample_upstreams_config, seeded_epoch
from gateway.db import migrate as migrations
from gateway.settings import Settings
from resolvers.app import create_app

T = TypeVar("T")
Work = Callable[[SampleEsp, tuple[Person, ...]], Awaitable[T]]


def served_gateway(settings: Settings, customers: int, work: Work[T]) -> T:
    """Run ``work`` against a seeded demo gateway; everything is stopped afterwards."""
    # The people as the database holds them, if a demo seeded it before.
    epoch = seeded_epoch(settings.database_url)
    ports = dict.fromkeys(SERVICE_NAMES, 0)
    with SampleUpstreams(size=customers, ports=ports, epoch=epoch) as samples:
        migrations.upgrade(settings.database_url)
        return asyncio.run(_served(settings, samples, work))


async def _served(settings: Settings, samples: SampleUpstreams, work: Work[T]) -> T:
    await prepare(settings, samples.people)
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {DEMO_API_KEY}"},
        timeout=300,
    ) as client:
        esp = SampleEsp(client)
        secrets = {name: SecretStr(value) for name, value in esp.webhook_secrets().items()}
        app = create_app(
            settings.model_copy(update={"webhook_secrets": secrets, "insecure_demo": True}),
            upstreams=sample_upstreams_config(samples.base_urls),
        )
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
        serving = asyncio.create_task(server.serve(sockets=[listening]))
        try:
            while not server.started:
                if serving.done():  # failed to start: its error, not a wait for ever
                    await serving
                    raise RuntimeError("the gateway stopped before it started")
                await asyncio.sleep(0.05)
            return await work(esp, samples.people)
        finally:
            server.should_exit = True
            await serving
            listening.close()
