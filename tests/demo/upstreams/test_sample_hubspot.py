"""The sample HubSpot CRM v3 contacts API, as a client sees it."""

from __future__ import annotations

import httpx

from demo.upstreams.credentials import DEMO_HUBSPOT_CLIENT_ID, DEMO_HUBSPOT_CLIENT_SECRET
from demo.upstreams.runner import SampleUpstreams

CONTACT = "/crm/v3/objects/contacts"


def test_get_contact_by_id_has_default_properties(
    hubspot: httpx.Client, upstreams: SampleUpstreams
) -> None:
    person = upstreams.people[3]
    answer = hubspot.get(f"{CONTACT}/{person.hubspot_id}")
    assert answer.status_code == 200
    body = answer.json()
    assert body["id"] == person.hubspot_id
    assert set(body["properties"]) == {
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    }
    assert body["properties"]["email"] == person.email
    assert body["archived"] is False
    assert body["createdAt"].endswith("Z")
    assert body["updatedAt"] >= body["createdAt"]


def test_get_contact_by_email_with_properties(
    hubspot: httpx.Client, upstreams: SampleUpstreams
) -> None:
    person = upstreams.people[10]
    answer = hubspot.get(
        f"{CONTACT}/{person.email.upper()}",
        params={
            "idProperty": "email",
            "properties": "email,phone,consent_email_marketing,date_of_birth,nonexistent",
        },
    )
    props = answer.json()["properties"]
    assert answer.json()["id"] == person.hubspot_id
    assert props == {
        "email": person.email,
        "phone": person.phone,
        "consent_email_marketing": str(person.email_marketing_consent).lower(),
        "date_of_birth": person.date_of_birth.isoformat(),
    }
    assert all(isinstance(value, str) for value in props.values())


def test_unknown_contact_is_404_object_not_found(hubspot: httpx.Client) -> None:
    answer = hubspot.get(f"{CONTACT}/1")
    assert answer.status_code == 404
    assert answer.json()["category"] == "OBJECT_NOT_FOUND"
    assert answer.json()["correlationId"]


def test_batch_read_complete_and_partial(hubspot: httpx.Client, upstreams: SampleUpstreams) -> None:
    people = upstreams.people[:3]
    inputs = [{"id": p.email} for p in people]
    complete = hubspot.post(
        f"{CONTACT}/batch/read",
        json={"properties": ["email", "firstname"], "idProperty": "email", "inputs": inputs},
    )
    assert complete.status_code == 200
    assert complete.json()["status"] == "COMPLETE"
    assert [r["id"] for r in complete.json()["results"]] == [p.hubspot_id for p in people]

    partial = hubspot.post(
        f"{CONTACT}/batch/read",
        json={"properties": ["email"], "inputs": [{"id": people[0].hubspot_id}, {"id": "42"}]},
    )
    assert partial.status_code == 207
    body = partial.json()
    assert body["numErrors"] == 1
    assert body["errors"][0]["context"]["ids"] == ["42"]
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert len(body["results"]) == 1


def test_batch_read_refuses_more_than_100(hubspot: httpx.Client) -> None:
    answer = hubspot.post(
        f"{CONTACT}/batch/read",
        json={"properties": [], "inputs": [{"id": str(i)} for i in range(101)]},
    )
    assert answer.status_code == 400
    assert answer.json()["category"] == "VALIDATION_ERROR"


def test_search_changed_since_pages_to_the_end(
    hubspot: httpx.Client, upstreams: SampleUpstreams
) -> None:
    since = 1_788_000_000_000  # 2026-08-29
    expected = {p.hubspot_id for p in upstreams.people if p.updated_at.timestamp() * 1000 >= since}
    query = {
        "filterGroups": [
            {
                "filters": [
                    {"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(since)}
                ]
            }
        ],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["email"],
        "limit": 100,
    }
    seen: list[str] = []
    modified: list[str] = []
    while True:
        body = hubspot.post(f"{CONTACT}/search", json=query).json()
        assert body["total"] == len(expected)
        seen += [r["id"] for r in body["results"]]
        modified += [r["properties"]["lastmodifieddate"] for r in body["results"]]
        if "paging" not in body:
            break
        query["after"] = body["paging"]["next"]["after"]
    assert set(seen) == expected
    assert len(seen) == len(expected)
    assert modified == sorted(modified)


def test_search_by_email_eq(hubspot: httpx.Client, upstreams: SampleUpstreams) -> None:
    person = upstreams.people[77]
    body = hubspot.post(
        f"{CONTACT}/search",
        json={
            "filterGroups": [
                {"filters": [{"propertyName": "email", "operator": "EQ", "value": person.email}]}
            ]
        },
    ).json()
    assert body["total"] == 1
    assert body["results"][0]["id"] == person.hubspot_id


def test_auth_refusals(upstreams: SampleUpstreams) -> None:
    url = f"{upstreams.base_urls['hubspot']}{CONTACT}/{upstreams.people[0].hubspot_id}"
    missing = httpx.get(url)
    wrong = httpx.get(url, headers={"Authorization": "Bearer nope"})
    assert missing.status_code == wrong.status_code == 401
    assert wrong.json()["category"] == "INVALID_AUTHENTICATION"


def test_oauth_client_credentials_and_expiry(upstreams: SampleUpstreams) -> None:
    base = upstreams.base_urls["hubspot"]
    bad = httpx.post(
        f"{base}/oauth/v1/token",
        data={"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"},
    )
    assert bad.status_code == 400
    issued = httpx.post(
        f"{base}/oauth/v1/token",
        data={
            "grant_type": "client_credentials",
            "client_id": DEMO_HUBSPOT_CLIENT_ID,
            "client_secret": DEMO_HUBSPOT_CLIENT_SECRET,
        },
    )
    token = issued.json()
    assert token["token_type"] == "bearer"
    assert token["expires_in"] == 1800
    url = f"{base}{CONTACT}/{upstreams.people[0].hubspot_id}"
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert httpx.get(url, headers=headers).status_code == 200
    httpx.delete(f"{base}/_sample/oauth")  # expire every issued token
    expired = httpx.get(url, headers=headers)
    assert expired.status_code == 401
    assert expired.json()["category"] == "EXPIRED_AUTHENTICATION"


def test_oauth_expiry_is_configurable(upstreams: SampleUpstreams) -> None:
    base = upstreams.base_urls["hubspot"]
    assert httpx.put(f"{base}/_sample/oauth", json={"expires_in": 0}).status_code == 200
    assert upstreams.hubspot.token_ttl_s == 0
    try:
        token = httpx.post(
            f"{base}/oauth/v1/token",
            data={
                "grant_type": "client_credentials",
                "client_id": DEMO_HUBSPOT_CLIENT_ID,
                "client_secret": DEMO_HUBSPOT_CLIENT_SECRET,
            },
        ).json()
    finally:
        upstreams.hubspot.token_ttl_s = 1800
    assert token["expires_in"] == 0
    answer = httpx.get(
        f"{base}{CONTACT}/{upstreams.people[0].hubspot_id}",
        headers={"Authorization": f"Bearer {token['access_token']}"},
    )
    assert answer.json()["category"] == "EXPIRED_AUTHENTICATION"


def test_rate_limit_body_is_hubspots(hubspot: httpx.Client, upstreams: SampleUpstreams) -> None:
    upstreams.hubspot.faults.update(rate_limit_next=1, retry_after_s=3)
    answer = hubspot.get(f"{CONTACT}/{upstreams.people[0].hubspot_id}")
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "3"
    assert answer.json()["errorType"] == "RATE_LIMIT"
    assert answer.json()["policyName"] == "SECONDLY"


def test_calls_are_counted_by_route_template(
    hubspot: httpx.Client, upstreams: SampleUpstreams
) -> None:
    for person in upstreams.people[:3]:
        hubspot.get(f"{CONTACT}/{person.hubspot_id}")
    hubspot.post(f"{CONTACT}/batch/read", json={"inputs": []})
    hubspot.get(f"{CONTACT}/a%2F..%2Fb")  # recorded as sent, still encoded
    calls = hubspot.get("/_sample/calls").json()
    assert calls == {
        "total": 5,
        "by_endpoint": {
            "GET /crm/v3/objects/contacts/{id}": 3,
            "POST /crm/v3/objects/contacts/batch/read": 1,
            "GET /crm/v3/objects/contacts/a/../b": 1,
        },
        "paths": [
            *(f"GET {CONTACT}/{p.hubspot_id}" for p in upstreams.people[:3]),
            f"POST {CONTACT}/batch/read",
            f"GET {CONTACT}/a%2F..%2Fb",
        ],
    }
    assert upstreams.hubspot.calls.count("GET /crm/v3/objects/contacts/{id}") == 3
    hubspot.delete("/_sample/calls")
    assert upstreams.hubspot.calls.total == 0
    assert upstreams.hubspot.calls.paths() == []
