"""Analytics: Segment's Profiles API (traits, events, external ids of one profile).

Every list pages with Segment's cursor object (``{"has_more", "next"}``, sent back as
``next=``). Traits come 10 per page unless asked otherwise, so the adapter asks for
``page_size`` and follows the cursor to the end; events stop once ``first`` are in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import AwareDatetime, ConfigDict, Field, JsonValue

from adapters.transport.auth import build_auth
from adapters.transport.cost_bucket import GuardedRedis
from adapters.transport.rest import RestClient
from adapters.transport.telemetry import NO_TELEMETRY, Telemetry

from .base import ClientBackedAdapter
from .config import SegmentConfig
from .external_ids import ID_RULES, checked_email, checked_id
from .payload import Payload, checked, parse_object
from .records import (
    AnalyticsEvent,
    AnalyticsTraits,
    ExternalId,
    NonEmpty,
    UtcDatetime,
    normalise_email,
)

__all__ = ["SegmentAdapter"]

# The identifier's type is part of the template; its value is one encoded path segment,
# so ``user_id:a/../..`` stays one profile's (``user_id:a%2F..%2F..``).
_USERS = "/v1/spaces/{space}/collections/users/profiles"
_BY_USER_ID = _USERS + "/user_id:{id}"
_BY_EMAIL = _USERS + "/email:{id}"
_RULE = ID_RULES["segment"]
_LIST_MAX = 100  # Segment's largest page of events or external ids
_KNOWN_TRAITS = ("email", "first_name", "last_name", "created_at", "last_seen_at", "user_id")


class _Cursor(Payload):
    unread = frozenset({"url", "limit"})
    may_omit = frozenset({"next"})

    has_more: bool
    next: str | None = None


class _Traits(Payload):
    traits: dict[str, JsonValue]
    cursor: _Cursor


class _KnownTraits(Payload):
    # Traits are free-form JSON set by whoever tracks; read the known ones leniently.
    model_config = ConfigDict(extra="allow", frozen=True, strict=False)
    complete = False
    open = True

    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    created_at: AwareDatetime | None = None
    last_seen_at: AwareDatetime | None = None
    user_id: str | None = None


class _Event(Payload):
    unread = frozenset(
        {"anonymous_id", "user_id", "context", "source_id", "encoding", "related", "traits"}
    )
    may_omit = frozenset({"event", "properties"})  # a page or identify call has none

    # The record's own rules (a non-empty id, a time in UTC) are checked here, once:
    # ``_event`` builds the record from this without validating it again.
    type: str
    event: str | None = None
    message_id: NonEmpty
    timestamp: UtcDatetime
    properties: dict[str, JsonValue] = Field(default_factory=dict)


class _Events(Payload):
    data: list[_Event]
    cursor: _Cursor


class _ExternalId(Payload):
    unread = frozenset({"encoding"})

    id: str
    type: str
    source_id: str | None = None
    collection: str | None = None
    created_at: AwareDatetime | None = None


class _ExternalIds(Payload):
    data: list[_ExternalId]
    cursor: _Cursor


def _next(cursor: _Cursor) -> str | None:
    return cursor.next if cursor.has_more and cursor.next else None


class SegmentAdapter(ClientBackedAdapter[SegmentConfig]):
    """``AnalyticsAdapter`` over one Segment space's user profiles."""

    kind: Literal["analytics"] = "analytics"

    def __init__(
        self,
        config: SegmentConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        telemetry: Telemetry = NO_TELEMETRY,
        redis: GuardedRedis | None = None,
    ) -> None:
        self.config = config
        auth = build_auth(config.name, config.auth)
        self.rest = RestClient(config, auth=auth, clock=clock, telemetry=telemetry, redis=redis)
        self._client = self.rest

    def _path(self, value: str) -> dict[str, str]:
        return {"space": self.config.space_id, "id": value}

    def _user(self, user_id: str) -> dict[str, str]:
        return self._path(checked_id(self.name, _RULE, user_id))

    async def fetch_traits(
        self, *, user_id: str | None = None, email: str | None = None
    ) -> AnalyticsTraits | None:
        if user_id is not None:
            profile, path = _BY_USER_ID, self._user(user_id)
        elif email is not None:
            address = normalise_email(email)
            checked_email(self.name, address)
            profile, path = _BY_EMAIL, self._path(address)
        else:
            raise ValueError("fetch_traits needs a user_id or an email")
        traits: dict[str, JsonValue] = {}
        pages = 0
        async for page in self.rest.cursor_pages(
            f"{profile}/traits",
            _Traits,
            lambda p: _next(p.cursor),
            path=path,
            params={"limit": self.config.page_size},
        ):
            traits.update(page.traits)
            pages += 1
        if pages == 0:
            return None
        known = parse_object(self.name, "traits", _KnownTraits, traits, self.rest.telemetry)
        with checked(self.name, "traits"):
            return AnalyticsTraits(
                source=self.name,
                user_id=known.user_id or user_id,
                email=known.email,
                first_name=known.first_name,
                last_name=known.last_name,
                created_at=known.created_at,
                last_seen_at=known.last_seen_at,
                extra={k: v for k, v in traits.items() if k not in _KNOWN_TRAITS},
            )

    async def fetch_events(
        self, user_id: str, first: int = 50, event_name: str | None = None
    ) -> Sequence[AnalyticsEvent]:
        path = self._user(user_id)
        if first <= 0:
            return []
        params: dict[str, str | int] = {"limit": min(first, self.config.page_size, _LIST_MAX)}
        if event_name:
            params["include"] = event_name
        events: list[AnalyticsEvent] = []
        async for page in self.rest.cursor_pages(
            f"{_BY_USER_ID}/events",
            _Events,
            lambda p: _next(p.cursor),
            path=path,
            params=params,
        ):
            events.extend(self._event(e) for e in page.data)
            if len(events) >= first:
                break
        return events[:first]

    async def fetch_external_ids(self, user_id: str) -> Sequence[ExternalId]:
        ids: list[ExternalId] = []
        async for page in self.rest.cursor_pages(
            f"{_BY_USER_ID}/external_ids",
            _ExternalIds,
            lambda p: _next(p.cursor),
            path=self._user(user_id),
            params={"limit": min(self.config.page_size, _LIST_MAX)},
        ):
            with checked(self.name, "external id"):
                ids.extend(
                    ExternalId(
                        source=self.name,
                        id=x.id,
                        type=x.type,
                        source_id=x.source_id,
                        collection=x.collection,
                        created_at=x.created_at,
                    )
                    for x in page.data
                )
        return ids

    def _event(self, event: _Event) -> AnalyticsEvent:
        session: Any = event.properties.get("session_id")
        # Not validated a second time: ``_Event`` held every rule of the record (and
        # validating 100 events per customer again cost as much as parsing the page).
        return AnalyticsEvent.model_construct(
            source=self.name,
            id=event.message_id,
            type=event.type,
            name=event.event,
            timestamp=event.timestamp,
            session_id=str(session) if session is not None else None,
            properties=dict(event.properties),
        )
