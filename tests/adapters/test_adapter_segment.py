"""The Segment adapter against the sample Profiles API: traits, events, external ids."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from adapters.protocols import AnalyticsAdapter
from adapters.records import AnalyticsEvent
from demo.people.behaviour import anonymous_ids, behaviour
from demo.upstreams.runner import SampleUpstreams
from demo.upstreams.segment import traits as sample_traits

Build = Callable[..., Any]
PROFILE = "GET /v1/spaces/{space_id}/collections/{collection}/profiles/{identifier}"


@pytest.fixture
def analytics(build: Build) -> AnalyticsAdapter:
    adapter = build("segment", page_size=5)
    assert isinstance(adapter, AnalyticsAdapter)
    return adapter


async def test_traits_follow_the_cursor_to_the_end(
    analytics: AnalyticsAdapter, upstreams: SampleUpstreams
) -> None:
    person = upstreams.people[9]
    traits = await analytics.fetch_traits(user_id=person.segment_user_id)
    assert traits is not None
    everything = sample_traits(person)
    assert upstreams.segment.calls.count(f"{PROFILE}/traits") == math.ceil(len(everything) / 5)
    assert traits.user_id == person.segment_user_id
    assert traits.source == "segment"
    assert traits.email == person.email.lower()
    assert (traits.first_name, traits.last_name) == (person.first_name, person.last_name)
    assert traits.created_at is not None
    assert traits.last_seen_at is not None
    assert traits.extra["favourite_category"] == everything["favourite_category"]
    assert "email" not in traits.extra


async def test_traits_by_email_and_unknown_profiles(
    analytics: AnalyticsAdapter, upstreams: SampleUpstreams
) -> None:
    person = upstreams.people[11]
    by_email = await analytics.fetch_traits(email=f" {person.email.upper()} ")
    assert by_email is not None
    assert by_email.user_id == person.segment_user_id
    assert await analytics.fetch_traits(user_id="usr_nobody") is None
    assert await analytics.fetch_events("usr_nobody") == []
    assert await analytics.fetch_external_ids("usr_nobody") == []
    with pytest.raises(ValueError, match="needs a user_id or an email"):
        await analytics.fetch_traits()


async def test_events_newest_first_in_pages(
    analytics: AnalyticsAdapter, upstreams: SampleUpstreams
) -> None:
    person = max(upstreams.people[:60], key=lambda p: len(behaviour(p).events))
    expected = behaviour(person).events
    assert len(expected) >= 12
    events = await analytics.fetch_events(person.segment_user_id, first=12)
    assert [e.id for e in events] == [e.message_id for e in expected[:12]]
    assert upstreams.segment.calls.count(f"{PROFILE}/events") == math.ceil(12 / 5)
    first = events[0]
    assert first.name == expected[0].event
    assert first.type == expected[0].type
    assert first.session_id == expected[0].session_id
    assert first.timestamp.tzinfo is not None
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(stamps, reverse=True)
    # Built without validating twice, each is the record validation makes of it.
    assert all(AnalyticsEvent.model_validate(e.model_dump()) == e for e in events)
    assert all(e.timestamp.utcoffset() == timedelta(0) for e in events)


async def test_events_filtered_by_name(
    analytics: AnalyticsAdapter, upstreams: SampleUpstreams
) -> None:
    person = max(upstreams.people[:60], key=lambda p: len(behaviour(p).events))
    viewed = [e for e in behaviour(person).events if e.event == "Product Viewed"]
    events = await analytics.fetch_events(
        person.segment_user_id, first=100, event_name="Product Viewed"
    )
    assert [e.id for e in events] == [e.message_id for e in viewed]
    assert all("product_id" in e.properties for e in events)


async def test_external_ids(analytics: AnalyticsAdapter, upstreams: SampleUpstreams) -> None:
    person = upstreams.people[13]
    ids = await analytics.fetch_external_ids(person.segment_user_id)
    kinds = {(x.type, x.id) for x in ids}
    assert ("user_id", person.segment_user_id) in kinds
    assert ("email", person.email.lower()) in kinds
    assert {x.id for x in ids if x.type == "anonymous_id"} == set(anonymous_ids(person))
