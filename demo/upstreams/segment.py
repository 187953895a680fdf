"""Sample Segment Profiles API: a profile's traits, events and external ids.

Basic auth with the access token as user name. Lists page with Segment's cursor
object (``{"url", "has_more", "next"}``, sent back as ``next=``); traits default
to 10 per page as Segment's do, so a client that forgets to page notices.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from demo.people.behaviour import Event, anonymous_ids, behaviour
from demo.people.orders import spend
from demo.people.population import Person
from demo.people.taste import taste
from demo.upstreams.credentials import SampleCredentials
from demo.upstreams.paging import bounded_int, decode_cursor, encode_cursor
from demo.upstreams.quota import SEGMENT_LIMIT
from demo.upstreams.service import (
    SampleService,
    basic_credentials,
    json_response,
    same_secret,
    seconds_header,
)

PROFILE = "/v1/spaces/{space_id}/collections/{collection}/profiles/{identifier}"
# Source ids as Segment shows them; one per tracked surface.
WEBSITE_SOURCE_ID = "qW8sGx7NfE"
SERVER_SOURCE_ID = "Lk2vR9cT4a"
_LIBRARY = {"name": "analytics.js", "version": "next-1.70.0"}


def segment_time(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def traits(person: Person) -> dict[str, Any]:
    """The profile's traits, in the order Segment would page them."""
    orders_count, spent = spend(person)
    seen = behaviour(person).last_seen_at or person.updated_at
    return {
        "email": person.email,
        "first_name": person.first_name,
        "last_name": person.last_name,
        "name": f"{person.first_name} {person.last_name}",
        "phone": person.phone,
        "created_at": segment_time(person.created_at),
        "last_seen_at": segment_time(seen),
        "city": person.city,
        "country": person.country,
        "locale": person.locale,
        "orders_count": orders_count,
        "lifetime_value": float(spent),
        "favourite_category": taste(person).favourite,
        "user_id": person.segment_user_id,
    }


def _error(status: int, code: str, message: str) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status)


def _parse_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    moment = datetime.fromisoformat(raw.strip().replace(" ", "+"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class SegmentSample(SampleService):
    """Segment Profiles API over the sample population, in one space."""

    name = "segment"
    rate_limit = SEGMENT_LIMIT

    def __init__(
        self,
        people: Sequence[Person],
        credentials: SampleCredentials | None = None,
        *,
        seed: int = 0,
    ) -> None:
        self.credentials = credentials or SampleCredentials()
        self._by_user_id = {p.segment_user_id: p for p in people}
        self._by_email = {p.email.lower(): p for p in people}
        super().__init__(people, seed=seed)

    @cached_property
    def _by_anonymous_id(self) -> dict[str, Person]:
        # Built on first use: nobody pays for it at start-up.
        return {anon: p for p in self.people for anon in anonymous_ids(p)}

    def routes(self) -> list[BaseRoute]:
        return [
            Route(f"{PROFILE}/traits", self._traits, methods=["GET"]),
            Route(f"{PROFILE}/events", self._events, methods=["GET"]),
            Route(f"{PROFILE}/external_ids", self._external_ids, methods=["GET"]),
        ]

    def rate_limited_response(self, retry_after_s: float) -> Response:
        response = _error(429, "too_many_requests", "Too many requests, slow down.")
        response.headers["Retry-After"] = seconds_header(retry_after_s)
        return response

    def error_response(self, status: int) -> Response:
        return _error(
            status,
            "internal" if status >= 500 else "bad_request",
            "The service is unavailable." if status >= 500 else "Bad request.",
        )

    def not_found_response(self) -> Response:
        return _error(404, "not_found", "Profile not found")

    def _profile(self, request: Request) -> Person | Response:
        """The person the path names, or the error answer."""
        given = basic_credentials(request)
        if given is None or not same_secret(given[0], self.credentials.segment_token):
            return _error(401, "unauthorized", "Unauthorized: invalid access token")
        params = request.path_params
        if params["space_id"] != self.credentials.segment_space or params["collection"] != "users":
            return _error(404, "not_found", "Space or collection not found")
        kind, colon, value = params["identifier"].partition(":")
        if not colon:
            kind, value = "user_id", params["identifier"]
        if kind == "user_id":
            person = self._by_user_id.get(value)
        elif kind == "email":
            person = self._by_email.get(value.strip().lower())
        elif kind == "anonymous_id":
            person = self._by_anonymous_id.get(value)
        else:
            return _error(400, "bad_request", f"unknown identifier type {kind!r}")
        return person if person is not None else self.not_found_response()

    @staticmethod
    def _query(request: Request, names: Sequence[str]) -> tuple[dict[str, str], int] | None:
        """(filters, offset): from the ``next`` cursor when there is one, which
        carries the filters of the first request, else from the query string.
        None for a cursor that is not one of ours."""
        token = request.query_params.get("next")
        if not token:
            return {name: request.query_params.get(name, "") for name in names}, 0
        state = decode_cursor(token)
        if (
            state is None
            or not isinstance(state.get("q"), dict)
            or not isinstance(state.get("o"), int)
        ):
            return None
        return state["q"], state["o"]

    @staticmethod
    def _page(
        request: Request,
        items: Sequence[Any],
        limits: tuple[int, int],
        query: dict[str, str],
        offset: int,
    ) -> tuple[Sequence[Any], dict[str, Any]] | Response:
        """The page of ``items`` the request asks for, and its cursor object."""
        default, maximum = limits
        limit = bounded_int(request.query_params.get("limit"), default, maximum)
        if limit is None:
            return _error(400, "bad_request", f"limit must be between 1 and {maximum}")
        has_more = offset + limit < len(items)
        cursor = {
            "url": request.url.path,
            "has_more": has_more,
            "next": encode_cursor({"q": query, "o": offset + limit}) if has_more else "",
        }
        return items[offset : offset + limit], cursor

    async def _traits(self, request: Request) -> Response:
        person = self._profile(request)
        if isinstance(person, Response):
            return person
        if (asked := self._query(request, ("include",))) is None:
            return _error(400, "bad_request", "invalid cursor")
        query, offset = asked
        everything = traits(person)
        include = [n for n in query["include"].split(",") if n]
        names = [n for n in everything if not include or n in include]
        paged = self._page(request, names, (10, 200), query, offset)
        if isinstance(paged, Response):
            return paged
        page, cursor = paged
        return json_response({"traits": {n: everything[n] for n in page}, "cursor": cursor})

    async def _events(self, request: Request) -> Response:
        person = self._profile(request)
        if isinstance(person, Response):
            return person
        if (asked := self._query(request, ("start", "end", "include"))) is None:
            return _error(400, "bad_request", "invalid cursor")
        query, offset = asked
        try:
            start, end = _parse_time(query["start"]), _parse_time(query["end"])
        except ValueError:
            return _error(400, "bad_request", "start and end must be ISO 8601 times")
        wanted = {n.strip() for n in query["include"].split(",") if n.strip()}
        events = [
            e
            for e in behaviour(person).events
            if (start is None or e.timestamp >= start)
            and (end is None or e.timestamp < end)
            and (not wanted or e.event in wanted)
        ]
        paged = self._page(request, events, (10, 100), query, offset)
        if isinstance(paged, Response):
            return paged
        page, cursor = paged
        return json_response({"data": [self._event(person, e) for e in page], "cursor": cursor})

    @staticmethod
    def _event(person: Person, event: Event) -> dict[str, Any]:
        return {
            "type": event.type,
            "event": event.event,
            "message_id": event.message_id,
            "source_id": WEBSITE_SOURCE_ID,
            "timestamp": segment_time(event.timestamp),
            "user_id": person.segment_user_id,
            "anonymous_id": event.anonymous_id,
            "properties": event.properties,
            "context": {
                "library": _LIBRARY,
                "locale": person.locale,
                "page": {"path": event.page_path},
            },
        }

    async def _external_ids(self, request: Request) -> Response:
        person = self._profile(request)
        if isinstance(person, Response):
            return person
        created = segment_time(person.created_at)
        ids = [
            ("user_id", person.segment_user_id, SERVER_SOURCE_ID),
            ("email", person.email, SERVER_SOURCE_ID),
            *(("anonymous_id", anon, WEBSITE_SOURCE_ID) for anon in anonymous_ids(person)),
        ]
        records = [
            {
                "id": value,
                "type": kind,
                "source_id": source,
                "collection": "users",
                "created_at": created,
                "encoding": "none",
            }
            for kind, value, source in ids
        ]
        if (asked := self._query(request, ())) is None:
            return _error(400, "bad_request", "invalid cursor")
        paged = self._page(request, records, (25, 100), *asked)
        if isinstance(paged, Response):
            return paged
        page, cursor = paged
        return json_response({"data": list(page), "cursor": cursor})
