"""The audit log names the key that read or changed a customer, and no person."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from sqlalchemy import select

from demo.upstreams.runner import SampleUpstreams
from gateway.db.access_models import Tombstone
from gateway.db.engine import create_engine
from gateway.db.models import AuditEntry
from tests.privacy.instances import (
    BEHAVIOUR,
    FORGET,
    SET_CONSENT,
    person_for,
)


async def test_the_audit_log_names_the_key_and_no_person(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    person = person_for(samples, privacy_url)
    log = (
        "query($id: ID!, $since: DateTime) { auditLog(customerId: $id, since: $since) "
        "{ occurredAt actor keyId action operation customerId } }"
    )
    async with instance() as gw:
        since = datetime.now(UTC) - timedelta(seconds=5)
        found = await gw.gql(BEHAVIOUR, email=person.email)
        customer_id = found["data"]["customer"]["id"]
        await gw.gql("query($e: [String!]) { customers(emails: $e) { id } }", e=[person.email])
        await gw.gql("query($id: ID!) { exportCustomer(id: $id) }", id=customer_id)
        await gw.gql(SET_CONSENT, id=customer_id, purpose="ANALYTICS", granted=False, source="api")
        await gw.gql(FORGET, id=customer_id)
        # Read at once: the reader's instance writes what it buffered first.
        body = await gw.gql(log, id=customer_id, since=since.isoformat())
        by_actor = await gw.gql(
            "query($a: String!) { auditLog(actor: $a, first: 2) { actor operation } }",
            a=gw.key_name,
        )
        # The same instant in another offset filters the same.
        paris = since.astimezone(timezone(timedelta(hours=2)))
        same = await gw.gql(log, id=customer_id, since=paris.isoformat())
        later = await gw.gql(
            log, id=customer_id, since=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
        )
        key_name = gw.key_name
    assert later == {"data": {"auditLog": []}}
    assert same == body
    assert "errors" not in body, body
    entries = body["data"]["auditLog"]
    assert {e["actor"] for e in entries} == {key_name}
    assert all(e["customerId"] == customer_id and e["keyId"] for e in entries)
    assert [(e["action"], e["operation"]) for e in reversed(entries)] == [
        ("read", "query:customer"),
        ("read", "query:customers"),
        ("export", "query:exportCustomer"),
        ("change", "mutation:setConsent"),
        ("erase", "mutation:forgetCustomer"),
    ]
    times = [datetime.fromisoformat(e["occurredAt"]) for e in entries]
    assert times == sorted(times, reverse=True)
    assert all(t.tzinfo is not None and t >= since for t in times), times
    assert by_actor["data"]["auditLog"] == [
        {"actor": key_name, "operation": "mutation:forgetCustomer"},
        {"actor": key_name, "operation": "mutation:setConsent"},
    ]
    # No personal data in any audit row, in the API or the table.
    assert person.email not in orjson.dumps(body).decode()
    engine = create_engine(privacy_url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(select(AuditEntry))).all()
            tombstones = (await connection.execute(select(Tombstone))).all()
    finally:
        await engine.dispose()
    dumped = repr(rows) + repr(tombstones)
    for personal in (person.email, person.first_name, person.last_name, person.email.split("@")[0]):
        assert personal not in dumped
