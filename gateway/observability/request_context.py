"""The id of the request being served, for every log line written while serving it.

Set by the edge (resolvers/http/request_id.py) from ``X-Request-ID`` or made up; read
by the log formatter (gateway/observability/logs.py). ``None`` outside a request."""

from __future__ import annotations

from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
REQUEST_ID_KEY = "gateway.request_id"  # in the scope too, for layers outside this one
