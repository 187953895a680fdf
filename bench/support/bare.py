"""The baseline for bench/load: a bare Starlette endpoint returning fixed JSON bytes.

Served by ``uvicorn bench.support.bare:app --workers 2`` exactly like the gateway, so the
ratio gateway / bare measures what the gateway adds, not the machine.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PAYLOAD_FILE = Path(tempfile.gettempdir()) / "gateway-bench-bare.json"


def _payload() -> bytes:
    return PAYLOAD_FILE.read_bytes() if PAYLOAD_FILE.exists() else b"{}"


_BODY = _payload()


async def graphql(request: Request) -> Response:
    await request.body()  # read the request like the gateway does
    return Response(_BODY, media_type="application/json")


app = Starlette(routes=[Route("/graphql", graphql, methods=["GET", "POST"])])
