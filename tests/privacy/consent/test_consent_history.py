"""Consent history: every statement stays readable after a newer one replaces it, newest
first; a merge keeps both records' statements; a subject access export holds them; an
erasure removes them with the customer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, func, select

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import ConsentChange
from gateway.privacy.consent import ConsentStore
from tests.conftest import unique_email
from tests.privacy.instances import FORGET, SET_CONSENT

CREATE = "mutation($e: String!) { upsertCustomer(input: {email: $e}) { id } }"
HISTORY = """query($id: ID!, $purpose: ConsentPurpose) {
  customer(id: $id) { consentHistory(purpose: $purpose) { purpose granted source } }
}"""
MERGE = (
    "mutation($into: ID!, $from: ID!) "
    '{ mergeCustomers(into: $into, from: $from, reason: "same person") { id } }'
)


async def _customer(gw: Any, tag: str) -> str:
    created = await gw.gql(CREATE, e=unique_email(tag))
    customer_id: str = created["data"]["upsertCustomer"]["id"]
    return customer_id


async def _say(gw: Any, customer_id: str, purpose: str, granted: bool, source: str) -> None:
    answer = await gw.gql(
        SET_CONSENT, id=customer_id, purpose=purpose, granted=granted, source=source
    )
    assert "errors" not in answer, answer


async def test_history_keeps_each_statement_through_merge_export_and_erasure(
    instance: Any, privacy_url: str
) -> None:
    async with instance() as gw:
        kept, gone = await _customer(gw, "history-a"), await _customer(gw, "history-b")
        await _say(gw, kept, "EMAIL_MARKETING", True, "signup")
        await _say(gw, kept, "EMAIL_MARKETING", False, "unsubscribe-link")
        await _say(gw, kept, "ANALYTICS", True, "cookie-banner")
        await _say(gw, gone, "EMAIL_MARKETING", True, "store-visit")
        email_only = await gw.gql(HISTORY, id=kept, purpose="EMAIL_MARKETING")
        every = await gw.gql(HISTORY, id=kept)
        listed = await gw.gql(
            "query($ids: [ID!]) { customers(ids: $ids) { consentHistory { source } } }",
            ids=[kept, gone],
        )
        merged = await gw.gql(MERGE, into=kept, **{"from": gone})
        after_merge = await gw.gql(HISTORY, id=kept, purpose="EMAIL_MARKETING")
        exported = await gw.gql("query($id: ID!) { exportCustomer(id: $id) }", id=kept)
        forgotten = await gw.gql(FORGET, id=kept)
        again = await _customer(gw, "history-c")  # a fresh record has none of it
        fresh = await gw.gql(HISTORY, id=again)
    statements = email_only["data"]["customer"]["consentHistory"]
    assert [(s["granted"], s["source"]) for s in statements] == [
        (False, "unsubscribe-link"),
        (True, "signup"),
    ]
    assert len(every["data"]["customer"]["consentHistory"]) == 3
    assert [[h["source"] for h in c["consentHistory"]] for c in listed["data"]["customers"]] == [
        ["cookie-banner", "unsubscribe-link", "signup"],
        ["store-visit"],
    ]
    assert "errors" not in merged, merged
    sources = {s["source"] for s in after_merge["data"]["customer"]["consentHistory"]}
    assert sources == {"unsubscribe-link", "signup", "store-visit"}
    history = exported["data"]["exportCustomer"]["consent_history"]
    assert {h["source"] for h in history} == {
        "signup",
        "unsubscribe-link",
        "cookie-banner",
        "store-visit",
    }
    assert "errors" not in forgotten, forgotten
    assert fresh["data"]["customer"]["consentHistory"] == []
    assert await _stored(privacy_url, kept) == 0
    assert await _stored(privacy_url, gone) == 0


async def _stored(url: str, customer_id: str) -> int:
    """The history rows the database still holds for a customer."""
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(ConsentChange)
                .where(ConsentChange.customer_id == uuid.UUID(customer_id))
            )
            return int(count or 0)
    finally:
        await engine.dispose()


async def test_each_customers_history_is_limited_by_the_database(
    instance: Any, privacy_url: str
) -> None:
    """A list of customers' histories, ``limit`` each: the newest of each, and the
    database sends no more rows than that, however long a customer's history is."""
    async with instance() as gw:
        long, short = await _customer(gw, "history-long"), await _customer(gw, "history-short")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        ConsentChange(
            customer_id=uuid.UUID(long),
            purpose="email_marketing",
            granted=n % 2 == 0,
            source=f"s{n}",
            recorded_at=start + timedelta(minutes=n),
        )
        for n in range(200)
    ] + [
        ConsentChange(
            customer_id=uuid.UUID(short),
            purpose="analytics",
            granted=True,
            source=f"t{n}",
            recorded_at=start + timedelta(minutes=n),
        )
        for n in range(2)
    ]
    engine = create_engine(privacy_url)
    sent: list[int] = []

    def count(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        # The adapted cursor holds every row the database sent for the statement.
        if "consent_history" in statement:
            sent.append(len(cursor._rows))

    try:
        sessions = create_sessionmaker(engine)
        async with sessions.begin() as session:
            session.add_all(rows)
        event.listen(engine.sync_engine, "after_cursor_execute", count)
        found = await ConsentStore(sessions).histories([uuid.UUID(long), uuid.UUID(short)], limit=5)
    finally:
        await engine.dispose()
    assert [r.source for r in found[uuid.UUID(long)]] == ["s199", "s198", "s197", "s196", "s195"]
    assert [r.source for r in found[uuid.UUID(short)]] == ["t1", "t0"]
    assert sum(sent) == 7, sent
