"""What each key may do in the console, over HTTP on Postgres and SQLite: a read-only
key gets no admin button and a 403 for any admin POST (nothing changes, nothing is
audited as a change); a writer invalidates and resolves reviews but neither exports nor
erases; an admin does all of it, each action audited under the signed-in key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette

from gateway.access.api_keys import Scope
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.ingest.importer import Importer
from gateway.settings import Settings
from tests.console.session_client import ConsoleClient, console_client
from tests.gql_client import gql
from tests.in_process import asgi, services_of

READ, WRITE, ADMIN = Scope.PROFILES_READ, Scope.PROFILES_WRITE, Scope.ADMIN


async def _api(app: Starlette, query: str, **variables: Any) -> dict[str, Any]:
    key, _ = await services_of(app).api_keys.create(f"api-{uuid.uuid4().hex[:8]}", {ADMIN})
    async with httpx.AsyncClient(
        transport=asgi(app), base_url="http://gw", headers={"Authorization": f"Bearer {key}"}
    ) as http:
        body = await gql(http, query, **variables)
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def _customer(app: Starlette) -> str:
    made = await _api(
        app,
        'mutation($e: String!) { upsertCustomer(input: {email: $e, firstName: "Ada"}) { id } }',
        e=f"scopes.{uuid.uuid4().hex[:10]}@example.com",
    )
    customer_id: str = made["upsertCustomer"]["id"]
    return customer_id


async def _changes_by(app: Starlette, actor: str) -> list[str]:
    await services_of(app).audit.flush()
    found = await services_of(app).audit.query(actor=actor)
    return [e.operation for e in found if e.action != "read"]


async def _admin_posts(client: ConsoleClient, customer_id: str) -> list[int]:
    base = f"/console/customers/{customer_id}"
    return [
        (await client.post(f"{base}/invalidate")).status_code,
        (await client.post(f"{base}/export")).status_code,
        (await client.post(f"{base}/forget", confirm="yes")).status_code,
        (await client.post("/console/templates/save", name="x", source="x")).status_code,
        (await client.post("/console/reviews/1", decision="merge", reason="forged")).status_code,
    ]


async def test_a_read_only_key_sees_no_admin_button_and_posts_none(app: Starlette) -> None:
    customer_id = await _customer(app)
    async with console_client(app, READ) as reader:
        page = await reader.http.get(f"/console/customers/{customer_id}")
        assert page.status_code == 200
        assert "data-admin" not in page.text
        assert "/console/reviews" not in page.text  # no link to a queue it may not work
        assert await _admin_posts(reader, customer_id) == [403] * 5
        assert (await reader.http.get("/console/reviews")).status_code == 403
        studio = await reader.http.get("/console/templates/studio")
        assert 'data-admin="save"' not in studio.text
        assert await _changes_by(app, reader.name) == []
    assert (await _api(app, "query($id: ID) { customer(id: $id) { id } }", id=customer_id))[
        "customer"
    ] == {"id": customer_id}


async def test_a_writer_invalidates_but_neither_exports_nor_erases(app: Starlette) -> None:
    customer_id = await _customer(app)
    async with console_client(app, READ, WRITE) as writer:
        page = await writer.http.get(f"/console/customers/{customer_id}")
        assert 'data-admin="invalidate"' in page.text
        assert 'data-admin="export"' not in page.text
        assert 'data-admin="forget"' not in page.text
        base = f"/console/customers/{customer_id}"
        assert (await writer.post(f"{base}/invalidate")).status_code == 303
        assert (await writer.post(f"{base}/export")).status_code == 403
        assert (await writer.post(f"{base}/forget", confirm="yes")).status_code == 403
        assert await _changes_by(app, writer.name) == ["mutation:invalidateCustomer"]


async def test_a_write_only_key_saving_a_template_is_not_shown_what_is_stored(
    app: Starlette,
) -> None:
    # An outside check: a failed save's page listed the stored template's versions,
    # formats and save times to a key that may only write (the API hides its history).
    name = f"scopes-{uuid.uuid4().hex[:8]}"
    await _api(
        app,
        'mutation($n: String!) { saveTemplate(name: $n, source: "Hi", format: TEXT) { name } }',
        n=name,
    )
    async with console_client(app, WRITE) as writer:
        refused = await writer.post("/console/templates/save", name=name, source="{% if %}")
    assert refused.status_code == 422
    assert "open version 1" not in refused.text
    assert "Saved" not in refused.text
    # The review queue shows both records of a pair: a reader's page, refused plainly
    # (it answered a 502 from the reader fields its query selected) and not linked.
    async with console_client(app, WRITE) as writer:
        queue = await writer.http.get("/console/reviews")
        home = await writer.http.get("/console/templates")
    assert queue.status_code == 403
    assert "profiles:read" in queue.text
    assert 'href="/console/reviews"' not in home.text


async def test_an_admin_exports_and_erases_after_confirming(app: Starlette) -> None:
    customer_id = await _customer(app)
    async with console_client(app, ADMIN) as admin:
        base = f"/console/customers/{customer_id}"
        exported = await admin.post(f"{base}/export")
        assert exported.status_code == 200
        assert exported.headers["content-disposition"].startswith("attachment;")
        assert exported.json()["customer"]["id"] == customer_id
        confirm = await admin.http.get(f"{base}/forget")
        assert confirm.status_code == 200
        assert "I confirm this customer is to be erased" in confirm.text
        unconfirmed = await admin.post(f"{base}/forget")
        assert unconfirmed.status_code == 400
        erased = await admin.post(f"{base}/forget", confirm="yes")
        assert erased.status_code == 200
        assert f"Erased <code>{customer_id}</code>" in erased.text
        assert set(await _changes_by(app, admin.name)) == {
            "query:exportCustomer",
            "mutation:forgetCustomer",
        }
    gone = await _api(app, "query($id: ID) { customer(id: $id) { id } }", id=customer_id)
    assert gone["customer"] is None


async def _review(app: Starlette, settings: Settings) -> str:
    """A fresh pair left for review: one edit in the first name, one in the birth date."""
    surname = "Zq" + uuid.uuid4().hex[:8]
    rows: list[tuple[int, dict[str, Any] | str]] = [
        (
            2,
            {
                "external_id": f"{surname}a",
                "first_name": "Henrike",
                "last_name": surname,
                "date_of_birth": "1966-05-21",
            },
        ),
        (
            3,
            {
                "external_id": f"{surname}b",
                "first_name": "Henrika",
                "last_name": surname,
                "date_of_birth": "1966-05-27",
            },
        ),
    ]
    engine = create_engine(settings.database_url)
    try:
        await Importer(
            create_sessionmaker(engine), "console_http", observed_at=datetime.now(UTC)
        ).run(rows)
    finally:
        await engine.dispose()
    queue = await _api(
        app, "{ identityReviews(first: 100) { nodes { id record { externalId } } } }"
    )
    return next(
        str(n["id"])
        for n in queue["identityReviews"]["nodes"]
        if n["record"]["externalId"].startswith(surname)
    )


async def test_a_review_needs_a_reason_and_is_resolved_as_the_api_would(
    app: Starlette, settings: Settings
) -> None:
    review_id = await _review(app, settings)
    async with console_client(app, READ, WRITE) as steward:
        page = await steward.http.get(f"/console/reviews?review={review_id}")
        assert page.status_code == 200
        assert f'data-review="{review_id}"' in page.text
        assert "log₂ m/u" in page.text
        blank = await steward.post(f"/console/reviews/{review_id}", decision="merge", reason=" ")
        assert blank.status_code == 400
        assert "Give a reason for the decision" in blank.text
        done = await steward.post(
            f"/console/reviews/{review_id}", decision="keep_apart", reason="two people"
        )
        assert done.status_code == 303
        assert done.headers["location"].endswith(f"done={review_id}&decision=kept_apart")
        assert "mutation:resolveReview" in await _changes_by(app, steward.name)
    queue = await _api(app, "{ identityReviews(first: 100) { nodes { id } } }")
    assert review_id not in {n["id"] for n in queue["identityReviews"]["nodes"]}


async def test_the_studio_checks_as_you_type_and_saves_on_record(app: Starlette) -> None:
    name = f"console-{uuid.uuid4().hex[:8]}"
    async with console_client(app, READ, WRITE) as writer:
        checked = await writer.http.post(
            "/console/templates/check",
            data={"source": "a\nb\n  {% frobnicate %}", "format": "HTML"},
            headers={"X-CSRF-Token": writer.csrf},
        )
        assert checked.status_code == 200
        answer = checked.json()
        assert (answer["ok"], answer["line"], answer["column"]) == (False, 3, 3)
        assert "unexpected tag 'frobnicate'" in answer["error"]
        unchecked = await writer.http.post(
            "/console/templates/check", data={"source": "x", "format": "HTML"}
        )
        assert unchecked.status_code == 403  # no token: refused like any POST

        broken = await writer.post(
            "/console/templates/save", name=name, source="{% if x %}", format="HTML"
        )
        assert broken.status_code == 422
        assert "line 1" in broken.text
        saved = await writer.post(
            "/console/templates/save",
            name=name,
            source="Hi {{ customer.first_name }}",
            format="TEXT",
        )
        assert saved.status_code == 303
        assert saved.headers["location"].endswith(f"name={name}&version=1&done=saved")
        assert await _changes_by(app, writer.name) == ["mutation:saveTemplate"]
    stored = await _api(app, "query($n: String!) { template(name: $n) { version format } }", n=name)
    assert stored["template"] == {"version": 1, "format": "TEXT"}
