"""Consent history: every statement stays readable after a newer one replaces it, newest
first; a merge keeps both records' statements; a subject access export holds them; an
erasure removes them with the customer."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import ConsentChange
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
