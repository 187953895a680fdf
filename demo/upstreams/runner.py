"""Run the four sample upstreams as real HTTP servers on loopback.

``SampleUpstreams`` serves them with uvicorn from one background thread with its
own event loop, so sync code, async tests and the demo use it alike; ``main()``
is ``python -m demo.upstreams`` for a separate process on fixed ports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import FrameType, TracebackType
from typing import Self

import uvicorn

from demo.people.population import DEFAULT_SIZE, EPOCH_ENV, demo_epoch, parse_epoch, population
from demo.upstreams.credentials import (
    DEMO_HUBSPOT_CLIENT_ID,
    DEMO_HUBSPOT_CLIENT_SECRET,
    DEMO_HUBSPOT_TOKEN,
    DEMO_SEGMENT_SPACE,
    DEMO_SEGMENT_TOKEN,
    DEMO_SHOPIFY_TOKEN,
    DEMO_SOAP_PASSWORD,
    DEMO_SOAP_USER,
    SampleCredentials,
)
from demo.upstreams.hubspot.api import HubSpotSample
from demo.upstreams.segment import SegmentSample
from demo.upstreams.service import SampleService
from demo.upstreams.shopify.api import ShopifySample
from demo.upstreams.soap_crm import SoapCrmSample

__all__ = [
    "DEMO_HUBSPOT_CLIENT_ID",
    "DEMO_HUBSPOT_CLIENT_SECRET",
    "DEMO_HUBSPOT_TOKEN",
    "DEMO_SEGMENT_SPACE",
    "DEMO_SEGMENT_TOKEN",
    "DEMO_SHOPIFY_TOKEN",
    "DEMO_SOAP_PASSWORD",
    "DEMO_SOAP_USER",
    "SERVICE_NAMES",
    "SampleUpstreams",
    "main",
]

SERVICE_NAMES = ("hubspot", "soap_crm", "shopify", "segment")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_BASE_PORT = 8701
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class SampleUpstreams:
    """The four sample services over one population, started and stopped together."""

    def __init__(
        self,
        size: int = DEFAULT_SIZE,
        ports: Mapping[str, int] | None = None,
        credentials: SampleCredentials | None = None,
        *,
        host: str = DEFAULT_HOST,
        seed: int = 0,
        enforce_limits: bool = True,
        epoch: datetime | None = None,
    ) -> None:
        unknown = set(ports or {}) - set(SERVICE_NAMES)
        if unknown:
            raise ValueError(f"unknown sample services: {sorted(unknown)}")
        self.host = host
        self.credentials = credentials or SampleCredentials()
        self._ports = dict.fromkeys(SERVICE_NAMES, 0) | dict(ports or {})
        self.people = population(size, epoch=epoch)
        self.hubspot = HubSpotSample(self.people, self.credentials, seed=seed)
        self.soap_crm = SoapCrmSample(self.people, self.credentials, seed=seed)
        self.shopify = ShopifySample(self.people, self.credentials, seed=seed)
        self.segment = SegmentSample(self.people, self.credentials, seed=seed)
        self.services: dict[str, SampleService] = {
            "hubspot": self.hubspot,
            "soap_crm": self.soap_crm,
            "shopify": self.shopify,
            "segment": self.segment,
        }
        # HubSpot's and Segment's rolling windows answer 429 beyond their limits, as the
        # real services do; a test suite's shared samples only announce them.
        for service in self.services.values():
            if service.window is not None:
                service.window.configure(enforced=enforce_limits)
        self.base_urls: dict[str, str] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def reset(self) -> None:
        """Clear every service's faults, call counters and rate windows, and refill the
        shop's GraphQL cost bucket."""
        for service in self.services.values():
            service.faults.reset()
            service.calls.reset()
            if service.window is not None:
                service.window.reset()
        self.shopify.graphql.reset()

    def start(self) -> Self:
        """Bind the ports and serve; returns once every server accepts connections."""
        if self._thread is not None:
            return self
        sockets = self._bind()
        self.base_urls = {
            name: f"http://{self.host}:{sock.getsockname()[1]}" for name, sock in sockets.items()
        }
        for service in self.services.values():
            service.rearm()
        self._ready.clear()
        self._failure = None
        self._thread = threading.Thread(
            target=self._run, args=(sockets,), name="sample-upstreams", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S) or self._failure is not None:
            self.stop()
            raise RuntimeError("the sample upstreams did not start") from self._failure
        return self

    def stop(self) -> None:
        """Stop serving; requests held by the ``hang`` knob are let go first."""
        thread, loop, stop = self._thread, self._loop, self._stop_requested
        if thread is None:
            return
        for service in self.services.values():
            service.release()
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        thread.join(_STOP_TIMEOUT_S)
        self._thread = self._loop = self._stop_requested = None

    def _bind(self) -> dict[str, socket.socket]:
        sockets: dict[str, socket.socket] = {}
        try:
            for name in SERVICE_NAMES:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sockets[name] = sock
                sock.bind((self.host, self._ports[name]))
        except OSError:
            for sock in sockets.values():
                sock.close()
            raise
        return sockets

    def _run(self, sockets: dict[str, socket.socket]) -> None:
        loop = _new_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(sockets))
        except BaseException as exc:  # noqa: BLE001 - reported to start(), which re-raises it
            self._failure = exc
            self._ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, sockets: dict[str, socket.socket]) -> None:
        self._stop_requested = asyncio.Event()
        servers = [
            uvicorn.Server(
                uvicorn.Config(
                    self.services[name].app,
                    log_config=None,
                    log_level="warning",
                    # Access logs would carry emails from request paths: no PII in logs.
                    access_log=False,
                    lifespan="off",
                    ws="none",
                    timeout_graceful_shutdown=1,
                )
            )
            for name in SERVICE_NAMES
        ]
        tasks = [
            asyncio.create_task(server.serve(sockets=[sockets[name]]))
            for server, name in zip(servers, SERVICE_NAMES, strict=True)
        ]
        while not all(server.started for server in servers):
            if any(task.done() for task in tasks):
                for server in servers:
                    server.should_exit = True
                await asyncio.gather(*tasks, return_exceptions=True)
                raise RuntimeError("a sample server failed to start")
            await asyncio.sleep(0.005)
        self._ready.set()
        await self._stop_requested.wait()
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the four samples on consecutive fixed ports until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m demo.upstreams", description="Run the sample upstream services."
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        help="hubspot on this port, then soap_crm, shopify, segment",
    )
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="people in the population")
    parser.add_argument(
        "--epoch",
        type=parse_epoch,
        help=f"the date the people's history runs up to (default: {EPOCH_ENV}, else today, "
        "UTC); a process seeding the same people passes its own so the two agree",
    )
    parser.add_argument("--json", action="store_true", help="print the URLs as one JSON object")
    parser.add_argument(
        "--no-limits",
        action="store_true",
        help="announce HubSpot's and Segment's rate limits without enforcing them",
    )
    args = parser.parse_args(argv)
    ports = {name: args.base_port + offset for offset, name in enumerate(SERVICE_NAMES)}
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with SampleUpstreams(
        args.size,
        ports,
        host=args.host,
        enforce_limits=not args.no_limits,
        epoch=args.epoch or demo_epoch(),
    ) as upstreams:
        if args.json:
            print(json.dumps(upstreams.base_urls), flush=True)
        else:
            for name, url in upstreams.base_urls.items():
                print(f"{name:<9} {url}", flush=True)
            print(
                f"segment space {upstreams.credentials.segment_space}; "
                "SOAP endpoint /soap/contacts; Ctrl-C stops",
                file=sys.stderr,
                flush=True,
            )
        done.wait()  # the signal handler runs on this thread and sets it
    return 0
