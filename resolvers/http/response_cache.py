"""The response cache at the edge: a persisted query's whole answer served again without
running GraphQL, where it is provably the answer a run would give.

Only persisted queries (APQ: the document named by its SHA-256, over GET or POST) are
served from it, keyed by the hash, the operation's name, its variables and the scopes
of the caller's key: a key without a scope never gets an answer built for one with it.
Only documents whose every root field is ``customer`` (by id or e-mail) or
``customers`` are stored, selecting below them only the customer's own data, which
every write to it drops (resolvers/graphql/storable_documents.py: an allow list, not
``render``, ``recommendations``, ``sources``, ``scores``, ``segments`` nor
``experiments``).
The answer is tagged, as it runs, with every customer it looked up
(gateway/upstreams/response_cache.py), and lives no longer than the shortest remaining
life of the upstream answers and stored profiles it was built from; an answer with
errors, or degraded (a source stale or failed, the database unreachable), is never
stored. A stored answer is still charged to the key's rate limit as the operation would
have been, and its reads are audited again each time it is served. It carries an
``ETag``; a GET whose ``If-None-Match`` matches gets 304; a GET's answer, hit or miss,
says ``Vary`` on the headers that choose the key and media type.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Scope

from gateway.access.api_keys import Principal
from gateway.privacy.audit import Action
from gateway.services import Services
from gateway.upstreams.byte_memo import ByteMemo
from gateway.upstreams.federation import SourceStatus
from gateway.upstreams.response_cache import Hit, ResponseCache, ResponseTrace, Ticket
from resolvers.graphql.access import record_access
from resolvers.graphql.loaders import Loaders
from resolvers.graphql.rate_charge import CHARGED
from resolvers.graphql.storable_documents import storable_document
from resolvers.http.authentication import COUNTED, principal_of, rate_limited_response

FRESH_FOR = "gateway.fresh_for"  # scope key (the view's): seconds a client may cache it
# What selects a stored answer besides the URL: the key (its scopes) and the media type.
VARY = "Authorization, X-API-Key, Accept"
_JSON_TYPES = ("application/json", "application/graphql-response+json")


@dataclass(slots=True)
class PersistedRequest:
    """A request naming a persisted query, and what its answer is stored under."""

    key: str
    hash_only: bool  # no document sent: the stored answer may stand in for the run
    operation_name: str | None
    trace: ResponseTrace
    variables: frozenset[str] = frozenset()  # the names sent: in the key
    ticket: Ticket | None = None
    document: str | None = None


def _loads(raw: str | bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _INVALID


_INVALID = object()


class PersistedRequests:
    """What each GET URL names, remembered per URL and scopes: an ESP's send repeats a
    few thousand URLs, and parsing a query string (unquoting it, then its JSON) cost
    more than the rest of serving a stored answer."""

    def __init__(self, max_kept: int = 10_000, max_bytes: int = 8 * 1024 * 1024) -> None:
        # Bounded by bytes too: a URL's query string is the client's to make long.
        self._kept: ByteMemo[tuple[bytes, frozenset[Any]], PersistedRequest | None]
        self._kept = ByteMemo(_memo_size, max_entries=max_kept, max_bytes=max_bytes)

    async def of(self, request: Request) -> PersistedRequest | None:
        """The persisted query this request names, if it is one that may be stored
        (a fresh trace each time: the caller's answer is built on it)."""
        principal = principal_of(request.scope)
        if principal is None:
            return None
        if request.method != "GET":
            return await persisted_request(request)
        memo = (request.scope["query_string"], principal.scopes)
        if memo in self._kept:
            found = self._kept.get(memo)
        else:
            found = await persisted_request(request)
            self._kept.put(memo, found)
        if found is None:
            return None
        return PersistedRequest(
            found.key, found.hash_only, found.operation_name, ResponseTrace(), found.variables
        )


def _memo_size(memo: tuple[bytes, frozenset[Any]], found: PersistedRequest | None) -> int:
    return len(memo[0]) + 256  # the query string, and about what is kept of it


async def persisted_request(request: Request) -> PersistedRequest | None:
    """The persisted query this request names, if it is one that may be stored."""
    principal = principal_of(request.scope)
    if principal is None:
        return None
    if request.method == "GET":
        params = request.query_params
        data: Any = {
            "query": params.get("query"),
            "operationName": params.get("operationName"),
            "variables": _loads(params.get("variables")),
            "extensions": _loads(params.get("extensions")),
        }
    elif request.method == "POST":
        if not request.headers.get("content-type", "").startswith(_JSON_TYPES):
            return None
        data = _loads(await request.body())
        if not isinstance(data, dict):
            return None
    else:
        return None
    extensions, variables = data.get("extensions"), data.get("variables")
    persisted = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
    if not isinstance(persisted, dict) or not isinstance(variables, dict | None):
        return None
    digest = persisted.get("sha256Hash")
    name, query = data.get("operationName"), data.get("query")
    if not isinstance(digest, str) or not isinstance(name, str | None):
        return None
    if not isinstance(query, str | None):
        return None
    return PersistedRequest(
        key=response_key(digest.lower(), name, variables or {}, principal),
        hash_only=query is None,
        operation_name=name,
        trace=ResponseTrace(),
        variables=frozenset(variables or ()),
    )


def response_key(
    digest: str, operation_name: str | None, variables: dict[str, Any], principal: Principal
) -> str:
    scopes = sorted(scope.value for scope in principal.scopes)
    material = orjson.dumps(
        [digest, operation_name, variables, scopes], option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(material).hexdigest()


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def not_modified(request: Request, etag: str) -> bool:
    """A GET whose ``If-None-Match`` names this answer (or anything, ``*``)."""
    return request.method == "GET" and _matches(request.headers.get("if-none-match"), etag)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return etag in tags or "*" in tags


def lifetime(services: Services, loaders: Loaders | None, trace: ResponseTrace) -> float:
    """How long an answer built now may be stored: the shortest remaining life of what
    it holds (0: it is not to be stored). A stored profile it read counts by what is
    left of its cached copy, not by a full ``profile_cache_ttl_s``."""
    settings = services.settings
    cap = min(
        settings.response_cache_ttl_s,
        settings.profile_cache_ttl_s,
        max(0.0, trace.expires_at - time.time()),
    )
    answered = loaders.answered if loaders is not None else []
    if any(o.status in {SourceStatus.STALE, SourceStatus.FAILED} for o in answered):
        return 0
    if not answered:
        return cap
    return min(cap, loaders.fresh_for() if loaders is not None else 0)


def _pack(body: bytes, etag: str, trace: ResponseTrace, charged: int, fresh_until: float) -> bytes:
    meta = orjson.dumps({"t": etag, "r": trace.reads, "c": charged, "f": fresh_until})
    return meta + b"\n" + body


def _unpack(payload: bytes) -> tuple[dict[str, Any], bytes]:
    meta, _, body = payload.partition(b"\n")
    return orjson.loads(meta), body


async def store(
    cache: ResponseCache,
    plan: PersistedRequest,
    request: Request,
    response: Response,
    ttl_s: float,
    max_bytes: int,
) -> None:
    """Keep an answer that ran without errors (the caller checked), if it may be kept:
    not one larger than ``max_bytes``, nor one sent variables its operation does not
    declare (the key holds every variable sent: each unused one would make a new key
    for the same answer)."""
    trace = plan.trace
    if plan.ticket is None or trace.untagged or not trace.tags or ttl_s <= 0:
        return
    if plan.document is None or len(response.body) > max_bytes:
        return
    declared = storable_document(plan.document, plan.operation_name)
    if declared is None or not plan.variables <= declared:
        return
    body = bytes(response.body)
    etag = etag_of(body)
    charged = int(request.scope.get(CHARGED, 1))
    # What a client may cache it for: as the run said (0 for stored data alone, which
    # nothing but a write changes, and a client hears of no write: it revalidates).
    fresh_for = int(request.scope.get(FRESH_FOR) or 0)
    payload = _pack(body, etag, trace, charged, time.time() + fresh_for)
    if len(payload) > max_bytes:
        return
    if await cache.store(plan.key, plan.ticket, payload, trace.tags, ttl_s):
        response.headers["ETag"] = etag


@dataclass(frozen=True, slots=True)
class _Stored:
    """A stored answer, decoded."""

    etag: str
    reads: tuple[tuple[Action, str, tuple[uuid.UUID, ...]], ...]
    charged: int
    fresh_until: float  # wall clock
    body: bytes


# The same payload is served thousands of times: decoded once, up to a byte budget (the
# body is kept beside the payload: both count).
_DECODED: ByteMemo[bytes, _Stored] = ByteMemo(
    lambda payload, _: 2 * len(payload), max_entries=4096, max_bytes=32 * 1024 * 1024
)


def _decoded(payload: bytes) -> _Stored:
    if payload in _DECODED:
        return _DECODED.get(payload)
    stored = _decode(payload)
    _DECODED.put(payload, stored)
    return stored


def _decode(payload: bytes) -> _Stored:
    meta, body = _unpack(payload)
    reads = tuple(
        (Action(action), str(operation), tuple(uuid.UUID(i) for i in ids))
        for action, operation, ids in meta.get("r", ())
    )
    return _Stored(str(meta["t"]), reads, int(meta.get("c", 1)), float(meta.get("f", 0)), body)


def header_of(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def served(
    services: Services, scope: Scope, hit: Hit, media_type: str
) -> list[Message] | None:
    """The stored answer as this request's response (its ASGI messages): charged and
    audited as the run would have been; None when it cannot be served (the caller runs
    the operation)."""
    principal = principal_of(scope)
    if principal is None:
        return None
    try:
        stored = _decoded(hit.payload)
    except (orjson.JSONDecodeError, ValueError, KeyError):
        return None
    extra = stored.charged - int(scope.get(COUNTED, 0))
    if extra > 0:
        retry_after = await services.rate_limit(principal, extra)
        if retry_after is not None:
            refused = rate_limited_response(retry_after)
            start = {"type": "http.response.start", "status": 429, "headers": refused.raw_headers}
            return [start, {"type": "http.response.body", "body": bytes(refused.body)}]
    for action, operation, ids in stored.reads:
        record_access(services, principal, action, operation, ids)
    fresh_for = max(0, min(int(hit.ttl_s), int(stored.fresh_until - time.time())))
    get = scope["method"] == "GET"
    headers = [
        (b"etag", stored.etag.encode()),
        (b"cache-control", f"private, max-age={fresh_for}".encode() if get else b"no-store"),
        (b"x-response-cache", b"hit"),
    ]
    if get:
        headers.append((b"vary", VARY.encode()))
    if get and _matches(header_of(scope, b"if-none-match"), stored.etag):
        return [{"type": "http.response.start", "status": 304, "headers": headers}, _EMPTY]
    headers.append((b"content-type", media_type.encode()))
    headers.append((b"content-length", str(len(stored.body)).encode()))
    return [
        {"type": "http.response.start", "status": 200, "headers": headers},
        {"type": "http.response.body", "body": stored.body},
    ]


_EMPTY: Message = {"type": "http.response.body", "body": b""}


__all__ = [
    "VARY",
    "PersistedRequest",
    "PersistedRequests",
    "etag_of",
    "header_of",
    "lifetime",
    "not_modified",
    "persisted_request",
    "response_key",
    "served",
    "store",
]
