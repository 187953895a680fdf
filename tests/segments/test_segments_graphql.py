"""Segments through GraphQL: saved by a writer (audited), read a page at a time by a
reader, suppression by default, ``Customer.segments``, a send's render of each member,
and clear refusals of a bad filter, cursor or page size."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from starlette.applications import Starlette

from gateway.access.api_keys import Scope
from gateway.settings import Settings
from tests.conftest import bearer, unique_email
from tests.gql_client import error_codes, gql
from tests.in_process import asgi, services_of
from tests.scores.people import scored_customer

SAVE = """mutation($name: String!, $filter: SegmentFilter!, $all: Boolean! = false) {
  saveSegment(name: $name, filter: $filter, includeSuppressed: $all) {
    name definition includeSuppressed
  }
}"""
LIQUID = "{% if customer.scores.purchase_propensity > 0.5 %}hot{% else %}cold{% endif %}"
PAGE = """query($name: String!, $first: Int!, $after: String, $liquid: String!) {
  segment(name: $name) {
    size
    customers(first: $first, after: $after) {
      edges { cursor node { email } }
      nodes { email segments render(template: $liquid, format: TEXT) { body } }
      pageInfo { endCursor hasNextPage }
    }
  }
}"""


def _filter(emails: list[str]) -> dict[str, Any]:
    """The issue's audience, narrowed to this test's customers (the database is shared)."""
    return {
        "all": [
            {"field": "email", "in": emails},
            {"field": "rfmSegment", "eq": "at_risk"},
            {"field": "purchasePropensity", "gte": 0.4},
        ]
    }


async def _walk(client: httpx.AsyncClient, name: str, first: int) -> list[dict[str, Any]]:
    after, pages = None, []
    while True:
        body = await gql(client, PAGE, name=name, first=first, after=after, liquid=LIQUID)
        assert "errors" not in body, body
        page = body["data"]["segment"]["customers"]
        pages.append(page)
        after = page["pageInfo"]["endCursor"]
        if not page["pageInfo"]["hasNextPage"]:
            return pages


async def test_a_saved_segment_is_paged_without_the_suppressed(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    tag = uuid.uuid4().hex[:8]
    emails = {k: unique_email(f"{k}{tag}") for k in ("hot", "warm", "cold", "no", "none", "bnc")}
    await scored_customer(settings, emails["hot"], propensity=0.8)
    await scored_customer(settings, emails["warm"], propensity=0.45)
    await scored_customer(settings, emails["cold"], propensity=0.1)  # outside the filter
    await scored_customer(settings, emails["no"], consent=False)  # said no
    await scored_customer(settings, emails["none"], consent=None)  # said nothing: no
    await scored_customer(settings, emails["bnc"], bounced=True)  # address bounced
    name = f"at risk {tag}"
    saved = await gql(client, SAVE, name=name, filter=_filter(list(emails.values())))
    assert "errors" not in saved, saved
    assert saved["data"]["saveSegment"]["definition"]["all"][1] == {
        "field": "rfmSegment",
        "eq": "at_risk",
    }

    pages = await _walk(client, name, 1)
    members = [n["email"] for p in pages for n in p["nodes"]]
    assert sorted(members) == sorted([emails["hot"], emails["warm"]])
    assert [e["node"]["email"] for p in pages for e in p["edges"]] == members
    assert pages[0]["edges"][0]["cursor"] == pages[0]["pageInfo"]["endCursor"]
    renders = {n["email"]: n["render"]["body"] for p in pages for n in p["nodes"]}
    assert renders == {emails["hot"]: "hot", emails["warm"]: "cold"}
    assert all(name in n["segments"] for p in pages for n in p["nodes"])
    body = await gql(client, PAGE, name=name, first=10, liquid=LIQUID)
    assert body["data"]["segment"]["size"] == 2

    # Asked to, the audience keeps those who may not be mailed.
    everyone = await gql(client, SAVE, name=name, filter=_filter(list(emails.values())), all=True)
    assert everyone["data"]["saveSegment"]["includeSuppressed"] is True
    members = [n["email"] for p in await _walk(client, name, 2) for n in p["nodes"]]
    assert sorted(members) == sorted(emails[k] for k in ("hot", "warm", "no", "none", "bnc"))


async def test_customer_segments_names_each_segment_a_customer_is_in(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    tag = uuid.uuid4().hex[:8]
    inside, outside = unique_email(f"in{tag}"), unique_email(f"out{tag}")
    await scored_customer(settings, inside, propensity=0.9)
    await scored_customer(settings, outside, consent=False)
    await gql(client, SAVE, name=f"a {tag}", filter=_filter([inside, outside]))
    await gql(client, SAVE, name=f"b {tag}", filter=_filter([inside, outside]), all=True)
    body = await gql(
        client,
        "query($e: [String!]) { customers(emails: $e) { email segments } }",
        e=[inside, outside],
    )
    found = {c["email"]: [s for s in c["segments"] if tag in s] for c in body["data"]["customers"]}
    assert found == {inside: [f"a {tag}", f"b {tag}"], outside: [f"b {tag}"]}


async def test_writers_save_readers_read_and_every_save_is_audited(
    app: Starlette, settings: Settings
) -> None:
    services = services_of(app)
    writer_name = f"writer-{uuid.uuid4().hex[:8]}"
    writer, _ = await services.api_keys.create(writer_name, (Scope.PROFILES_WRITE,), 10**6)
    reader, _ = await services.api_keys.create("r", (Scope.PROFILES_READ,), 10**6)
    email = unique_email("scoped")
    await scored_customer(settings, email)
    name = f"scoped {uuid.uuid4().hex[:8]}"
    async with (
        httpx.AsyncClient(transport=asgi(app), base_url="http://gw", headers=bearer(writer)) as w,
        httpx.AsyncClient(transport=asgi(app), base_url="http://gw", headers=bearer(reader)) as r,
    ):
        refused = await gql(r, SAVE, name=name, filter=_filter([email]))
        assert error_codes(refused) == [("FORBIDDEN", ["saveSegment"])]
        saved = await gql(w, SAVE, name=name, filter=_filter([email]))
        assert saved["data"]["saveSegment"]["name"] == name
        # The writer learns what it saved, not who is in it.
        peek = await gql(
            w,
            "mutation($n: String!, $f: SegmentFilter!) { saveSegment(name: $n, filter: $f) "
            "{ name size } }",
            n=name,
            f=_filter([email]),
        )
        assert error_codes(peek) == [("FORBIDDEN", ["saveSegment", "size"])]
        listed = await gql(w, PAGE, name=name, first=5, liquid=LIQUID)
        assert error_codes(listed) == [("FORBIDDEN", ["segment"])]
        read = await gql(r, PAGE, name=name, first=5, liquid=LIQUID)
        assert [n["email"] for n in read["data"]["segment"]["customers"]["nodes"]] == [email]
    entries = await services.audit.query(actor=writer_name)
    assert [e.operation for e in entries] == ["mutation:saveSegment"] * 2
    assert all(e.action == "change" and e.customer_id is None for e in entries)


async def test_a_bad_filter_cursor_or_page_size_is_refused_and_saves_nothing(
    client: httpx.AsyncClient,
) -> None:
    name = f"bad {uuid.uuid4().hex[:8]}"
    bad_filters: list[tuple[dict[str, Any], str]] = [
        ({"all": [{"field": "password", "eq": "x"}]}, "unknown field 'password'"),
        ({"all": [{"field": "purchasePropensity", "gte": "high"}]}, "takes a number"),
        ({"all": [{"field": "rfmSegment", "eq": "vip"}]}, "'rfmSegment' is one of"),
        ({"all": [{"field": "rfmSegment", "gt": "lost"}]}, "takes eq, in, ne, not gt"),
        ({"field": "frequency", "gt": 1, "lt": 5}, "exactly one operator"),
        ({"all": [{"field": "frequency"}]}, "exactly one operator"),
        ({"field": "frequency", "gt": 1, "all": []}, "give one of"),
        ({"all": [{"field": "createdAt", "gt": "2026-01-01"}]}, "with an offset"),
        ({"all": [{"field": "locale", "in": []}]}, "non-empty list"),
    ]
    for given, reason in bad_filters:
        body = await gql(client, SAVE, name=name, filter=given)
        assert error_codes(body) == [("BAD_USER_INPUT", ["saveSegment"])], (given, body)
        assert reason in body["errors"][0]["message"], (given, body)
    assert (await gql(client, PAGE, name=name, first=1, liquid=LIQUID))["data"]["segment"] is None
    for document, variables in (
        ('mutation { saveSegment(name: "x", filter: {field: "ok", eq: {a: 1}}) { name } }', {}),
        (SAVE, {"name": "x", "filter": {"field": "frequency", "eq": {"a": 1}}}),
    ):
        answer = await client.post("/graphql", json={"query": document, "variables": variables})
        assert answer.status_code == 200, answer.text
        assert "A SegmentValue is a string, a number or a boolean" in answer.text

    await gql(client, SAVE, name=name, filter={"all": []})
    for first, after in ((0, None), (1001, None), (1, "not a cursor!")):
        body = await gql(client, PAGE, name=name, first=first, after=after, liquid=LIQUID)
        assert ("BAD_USER_INPUT", ["segment", "customers"]) in error_codes(body), body
    bad_name = await gql(client, SAVE, name="  ", filter={"all": []})
    assert error_codes(bad_name) == [("BAD_USER_INPUT", ["saveSegment"])]
    deleted = await gql(client, "mutation($n: String!) { deleteSegment(name: $n) }", n=name)
    assert deleted["data"]["deleteSegment"] is True
    again = await gql(client, "mutation($n: String!) { deleteSegment(name: $n) }", n=name)
    assert error_codes(again) == [("NOT_FOUND", ["deleteSegment"])]
