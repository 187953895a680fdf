"""The sample Segment Profiles API, as a client sees it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from demo.people.behaviour import behaviour
from demo.upstreams.credentials import DEMO_SEGMENT_SPACE
from demo.upstreams.runner import SampleUpstreams


def test_traits_page_by_ten_by_default(segment: httpx.Client, upstreams: SampleUpstreams) -> None:
    person = upstreams.people[12]
    first = segment.get(f"/user_id:{person.segment_user_id}/traits").json()
    assert len(first["traits"]) == 10
    assert first["cursor"]["has_more"] is True
    rest = segment.get(
        f"/user_id:{person.segment_user_id}/traits", params={"next": first["cursor"]["next"]}
    ).json()
    traits = first["traits"] | rest["traits"]
    assert rest["cursor"]["has_more"] is False
    assert traits["email"] == person.email
    assert traits["first_name"] == person.first_name
    assert {"created_at", "last_seen_at"} <= set(traits)


def test_traits_by_email_with_include(segment: httpx.Client, upstreams: SampleUpstreams) -> None:
    person = upstreams.people[13]
    body = segment.get(
        f"/email:{person.email}/traits", params={"include": "email,last_name", "limit": 200}
    ).json()
    assert body["traits"] == {"email": person.email, "last_name": person.last_name}


def test_events_newest_first_and_paginated(
    segment: httpx.Client, upstreams: SampleUpstreams
) -> None:
    person = max(upstreams.people[:50], key=lambda p: len(behaviour(p).events))
    path = f"/user_id:{person.segment_user_id}/events"
    events: list[dict[str, Any]] = []
    params: dict[str, str | int] = {"limit": 7}
    while True:
        body = segment.get(path, params=params).json()
        events += body["data"]
        if not body["cursor"]["has_more"]:
            break
        params = {"limit": 7, "next": body["cursor"]["next"]}
    assert len(events) == len(behaviour(person).events) > 7
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps, reverse=True)
    assert all(e["properties"]["session_id"].startswith("sess_") for e in events)
    assert {e["event"] for e in events} <= {
        "Product Viewed",
        "Product Added",
        "Product Removed",
        "Checkout Started",
        "Order Completed",
        "Page Viewed",
    }
    viewed = next(e for e in events if e["event"] == "Product Viewed")
    assert viewed["type"] == "track"
    assert viewed["properties"]["product_id"].isdigit()


def test_events_time_window_survives_paging(
    segment: httpx.Client, upstreams: SampleUpstreams
) -> None:
    person = max(upstreams.people[:50], key=lambda p: len(behaviour(p).events))
    path = f"/user_id:{person.segment_user_id}/events"
    # 31 to 7 days before the people's anchor: inside their 60 days of events.
    first, last = (f"{(person.epoch - timedelta(days=d)).date()}" for d in (31, 7))
    window = {"start": f"{first}T00:00:00Z", "end": f"{last}T00:00:00Z"}
    body = segment.get(path, params={**window, "limit": 3}).json()
    stamps = [e["timestamp"] for e in body["data"]]
    while body["cursor"]["has_more"]:
        # The cursor carries the window: a follow-up sends only next and limit.
        body = segment.get(path, params={"next": body["cursor"]["next"], "limit": 3}).json()
        stamps += [e["timestamp"] for e in body["data"]]
    expected = [e for e in behaviour(person).events if first <= e.timestamp.isoformat() < last]
    assert len(stamps) == len(expected) > 3
    assert all(first <= stamp < last for stamp in stamps)


def test_external_ids(segment: httpx.Client, upstreams: SampleUpstreams) -> None:
    person = upstreams.people[14]
    body = segment.get(f"/user_id:{person.segment_user_id}/external_ids").json()
    kinds = {(x["type"], x["id"]) for x in body["data"]}
    assert ("email", person.email) in kinds
    assert ("user_id", person.segment_user_id) in kinds
    anonymous = next(x["id"] for x in body["data"] if x["type"] == "anonymous_id")
    assert all(x["collection"] == "users" and x["encoding"] == "none" for x in body["data"])
    by_anon = segment.get(f"/anonymous_id:{anonymous}/traits", params={"include": "email"})
    assert by_anon.json()["traits"]["email"] == person.email


def test_unknown_profile_wrong_space_and_auth(
    upstreams: SampleUpstreams, segment: httpx.Client
) -> None:
    missing = segment.get("/user_id:usr_nobody/traits")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "not_found", "message": "Profile not found"}}
    base = upstreams.base_urls["segment"]
    person = upstreams.people[0]
    wrong_space = httpx.get(
        f"{base}/v1/spaces/spa_other/collections/users/profiles/"
        f"user_id:{person.segment_user_id}/traits",
        auth=(upstreams.credentials.segment_token, ""),
    )
    assert wrong_space.status_code == 404
    refused = httpx.get(
        f"{base}/v1/spaces/{DEMO_SEGMENT_SPACE}/collections/users/profiles/"
        f"user_id:{person.segment_user_id}/traits",
        auth=("wrong", ""),
    )
    assert refused.status_code == 401
