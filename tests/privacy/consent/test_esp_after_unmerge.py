"""An unmerge gives back everything the split identity reported, an address it held before
included: an ESP's unsubscribe or hard bounce for that older address then reaches the
person split off, never the survivor they were merged into by mistake
(gateway/identity/unmerges.py, migration 0028)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db.engine import create_sessionmaker
from gateway.db.models import Customer
from gateway.identity import unmerges
from gateway.identity.config import DEFAULT_CONFIG
from gateway.identity.linkage import repository
from gateway.identity.linkage.resolution import _LOCK_NAMESPACE, lock_keys
from gateway.identity.merges import merge_in
from gateway.identity.unmerges import unmerge_customer
from gateway.identity.values import email_parts
from tests.conftest import unique_email
from tests.gql_client import gql
from tests.identity.test_merge_api import MERGE, UNMERGE
from tests.in_process import services_of
from tests.ingest.webhook_requests import sendgrid_event, sendgrid_request
from tests.privacy.consent.test_bounced_addresses import (
    audience_of,
    bounce,
    members,
    move,
    shop_customer,
)

SUPPRESSED = "query($id: ID!) { customer(id: $id) { email suppressed } }"


async def _merged_and_split(gw: httpx.AsyncClient, tag: str) -> tuple[str, str, str, str, str]:
    """Ann and Bob, each a shop customer opted in; Bob moves from an old address to a new
    one, is merged into Ann, then split back out. (Ann, Bob now, Bob's old, Bob's new,
    Ann's address.)"""
    ann_email, old, new = unique_email(f"{tag}-ann"), unique_email(f"{tag}-old"), unique_email(tag)
    ann, _ = await shop_customer(gw, ann_email)
    bob, bob_shop = await shop_customer(gw, old)
    await move(gw, bob_shop, new, time.time() - 3600)
    merged = await gql(gw, MERGE, into=ann, **{"from": bob}, reason="looked alike")
    assert "errors" not in merged, merged
    split = await gql(gw, UNMERGE, source="shopify", externalId=str(bob_shop))
    assert "errors" not in split, split
    bob_now = split["data"]["unmergeCustomer"]["id"]
    assert split["data"]["unmergeCustomer"]["email"] == new
    return ann, bob_now, old, new, ann_email


async def _unsubscribed(gw: httpx.AsyncClient, address: str) -> str:
    """SendGrid reports an unsubscribe from ``address`` now: the customer it named."""
    event = sendgrid_event(address, "unsubscribe", timestamp=int(time.time()) + 1)
    response = await gw.post(**sendgrid_request([event]))
    assert response.status_code == 200, response.text
    named: str = response.json()["events"][0]["customerId"]
    return named


async def _suppressed(gw: httpx.AsyncClient, customer: str) -> bool:
    body = await gql(gw, SUPPRESSED, id=customer)
    assert "errors" not in body, body
    return bool(body["data"]["customer"]["suppressed"])


async def test_an_unsubscribe_for_an_address_held_before_reaches_the_person_split_off(
    gw: httpx.AsyncClient,
) -> None:
    ann, bob, old, _, _ = await _merged_and_split(gw, "unsub")
    assert await _unsubscribed(gw, old) == bob
    assert await _suppressed(gw, bob)
    assert not await _suppressed(gw, ann)


async def test_a_bounce_while_merged_stays_with_the_address_split_off(
    gw: httpx.AsyncClient,
) -> None:
    """A hard bounce of Bob's address while he was merged into Ann was stored as the
    survivor's; split back out, Bob at that address is out of the send audience (the
    bounce kept for the address reaches him as it reaches anyone taking it on), and Ann
    at hers stays in it."""
    ann_email, old, new = unique_email("b-ann"), unique_email("b-old"), unique_email("b-new")
    now = time.time()
    ann, _ = await shop_customer(gw, ann_email)
    bob, bob_shop = await shop_customer(gw, old)
    await move(gw, bob_shop, new, now - 3600)
    audience = await audience_of(gw, [ann_email, new])
    merged = await gql(gw, MERGE, into=ann, **{"from": bob}, reason="looked alike")
    assert "errors" not in merged, merged
    assert await bounce(gw, new, now - 60) == "processed"
    assert await members(gw, audience) == {ann_email}  # the survivor keeps its address
    split = await gql(gw, UNMERGE, source="shopify", externalId=str(bob_shop))
    assert "errors" not in split, split
    assert await members(gw, audience) == {ann_email}


async def test_splitting_off_the_survivors_own_identity_takes_its_address(
    gw: httpx.AsyncClient,
) -> None:
    """Merged into Ann, then Ann's own identity split off: the address the merge kept for
    the survivor is Ann's, so it goes with her; the one left is Bob again, at his
    address, and an unsubscribe for Ann's reaches Ann."""
    now = time.time()
    a_old, a_new = unique_email("own-a-old"), unique_email("own-a-new")
    b_old, b_new = unique_email("own-b-old"), unique_email("own-b-new")
    ann, ann_shop = await shop_customer(gw, a_old)
    await move(gw, ann_shop, a_new, now - 3600)
    bob, bob_shop = await shop_customer(gw, b_old)
    await move(gw, bob_shop, b_new, now - 3000)
    merged = await gql(gw, MERGE, into=ann, **{"from": bob}, reason="looked alike")
    assert merged["data"]["mergeCustomers"]["email"] == a_new, merged
    split = await gql(gw, UNMERGE, source="shopify", externalId=str(ann_shop))
    assert "errors" not in split, split
    ann_now = split["data"]["unmergeCustomer"]
    assert ann_now["email"] == a_new
    left = await gql(gw, SUPPRESSED, id=ann)
    assert left["data"]["customer"]["email"] == b_new, left
    assert await _unsubscribed(gw, a_new) == ann_now["id"]
    assert await _suppressed(gw, ann_now["id"])
    assert not await _suppressed(gw, ann)


UPSERT_WITH_ID = """mutation($email: String!, $id: String!) {
  upsertCustomer(input: {email: $email, identities: [{source: "crm", externalId: $id}]}) { id }
}"""


async def test_a_customer_made_through_the_api_with_an_identity_takes_its_address_back(
    gw: httpx.AsyncClient,
) -> None:
    """``upsertCustomer`` with an address and one CRM identity says that identity's
    person has that address: merged into a shop customer and split back out, the address
    goes with it, and so does an unsubscribe for it."""
    ann, _ = await shop_customer(gw, unique_email("api-ann"))
    email, crm_id = unique_email("api-bob"), f"crm-{uuid.uuid4().hex[:10]}"
    made = await gql(gw, UPSERT_WITH_ID, email=email, id=crm_id)
    assert "errors" not in made, made
    bob_before = made["data"]["upsertCustomer"]["id"]
    merged = await gql(gw, MERGE, into=ann, **{"from": bob_before}, reason="looked alike")
    assert "errors" not in merged, merged
    split = await gql(gw, UNMERGE, source="crm", externalId=crm_id)
    assert split["data"]["unmergeCustomer"]["email"] == email, split
    bob = split["data"]["unmergeCustomer"]["id"]
    assert await _unsubscribed(gw, email) == bob
    assert not await _suppressed(gw, ann)


FORGET = "mutation($id: ID!) { forgetCustomer(id: $id) { attributes } }"
HELD = "query($id: ID!) { customer(id: $id) { attributes { name value } } }"


async def test_a_bounce_from_before_the_merge_goes_with_its_address(
    gw: httpx.AsyncClient,
) -> None:
    """Bob's mailbox bounced (the ESP wrote it dotted, with a tag), then he was merged
    into Ann and split back out: the bounce is his, under both spellings (left with Ann,
    his address outlived his erasure there)."""
    ann, _ = await shop_customer(gw, unique_email("pre-ann"))
    name = uuid.uuid4().hex[:10]
    bob_email, mailed = f"{name}@gmail.com", f"{name[:3]}.{name[3:]}+news@gmail.com"
    bob, bob_shop = await shop_customer(gw, bob_email)
    assert await bounce(gw, mailed, time.time() - 60) == "processed"
    merged = await gql(gw, MERGE, into=ann, **{"from": bob}, reason="looked alike")
    assert "errors" not in merged, merged
    split = await gql(gw, UNMERGE, source="shopify", externalId=str(bob_shop))
    bob_now = split["data"]["unmergeCustomer"]["id"]
    assert "errors" not in await gql(gw, FORGET, id=bob_now)
    held = (await gql(gw, HELD, id=ann))["data"]["customer"]["attributes"]
    assert not {bob_email, mailed} & {a["value"] for a in held}, held
    assert "email_status" not in {a["name"] for a in held}, held


def _postgres_engine(gw: httpx.AsyncClient) -> AsyncEngine:
    engine: AsyncEngine = services_of(gw.app).engine  # type: ignore[attr-defined]
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer: the two writes cannot interleave")
    return engine


# Sessions of this database waiting, by what for: a key stripe of the identity linker
# (its advisory locks' namespace, gateway/identity/linkage/resolution.py), or a row.
_WAITING = text(
    "SELECT count(*) FILTER (WHERE l.locktype = 'advisory' AND l.classid = :namespace),"
    " count(*) FILTER (WHERE l.locktype IN ('transactionid', 'tuple'))"
    " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE NOT l.granted AND a.datname = current_database()"
)


async def _until_waiting(
    engine: AsyncEngine, *tasks: asyncio.Task[Any], keys: int = 0, rows: int = 0
) -> None:
    """Until at least ``keys`` sessions wait on a linker key and ``rows`` on a row (either
    condition, when both are given), or every task is done (the code under test took no
    lock the others wait on). SQLite shows no waits: a moment, for a writer to reach its
    wait for the database's write lock."""
    if engine.dialect.name != "postgresql":
        await asyncio.wait(tasks, timeout=0.5)
        return
    deadline = time.monotonic() + 20
    async with engine.connect() as connection:
        while time.monotonic() < deadline and not all(task.done() for task in tasks):
            on_keys, on_rows = (
                await connection.execute(_WAITING, {"namespace": _LOCK_NAMESPACE})
            ).one()
            if (keys and on_keys >= keys) or (rows and on_rows >= rows):
                return
            await connection.rollback()  # a fresh snapshot of the views each time
            await asyncio.sleep(0.02)


async def test_an_unmerge_started_during_a_webhook_for_the_identity_waits_for_it(
    gw: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shop update for Bob, read while Bob was merged into Ann, and an unmerge of Bob
    started between the linker's reads and its locks (made certain here by starting it
    just before the lock): the unmerge holds the linker's keys of the customer it splits,
    so it waits for the update, then moves Bob's new address with his identity; an
    unsubscribe for it reaches Bob, not Ann. On SQLite too: the batch holds the database's
    write lock from its start (its reads were made outside any transaction before, and the
    split committed between them and its first write gave Ann Bob's new address)."""
    engine: AsyncEngine = services_of(gw.app).engine  # type: ignore[attr-defined]
    ann, _ = await shop_customer(gw, unique_email("race-ann"))
    bob, bob_shop = await shop_customer(gw, unique_email("race-bob"))
    merged = await gql(gw, MERGE, into=ann, **{"from": bob}, reason="looked alike")
    assert "errors" not in merged, merged
    real = repository.lock_customers  # type: ignore[attr-defined]  # patched where it is used
    split: list[asyncio.Task[uuid.UUID]] = []

    async def unmerge_started_first(connection: Any, ids: Any, **options: Any) -> Any:
        if uuid.UUID(ann) in set(ids) and not split:
            sessions = create_sessionmaker(engine)
            split.append(asyncio.create_task(unmerge_customer(sessions, "shopify", str(bob_shop))))
            await _until_waiting(engine, split[0], keys=1)
            # The split waits for this write (the keys it shares with Bob's identity).
            assert not split[0].done()
        return await real(connection, ids, **options)

    monkeypatch.setattr(repository, "lock_customers", unmerge_started_first)
    newer = unique_email("race-bob-newer")
    await move(gw, bob_shop, newer, time.time() - 60)
    monkeypatch.setattr(repository, "lock_customers", real)
    assert split, "the update never linked to Ann"
    bob_now = str(await asyncio.wait_for(split[0], 20))
    assert (await gql(gw, SUPPRESSED, id=bob_now))["data"]["customer"]["email"] == newer
    assert await _unsubscribed(gw, newer) == bob_now
    assert await _suppressed(gw, bob_now)
    assert not await _suppressed(gw, ann)


async def test_an_unsubscribe_during_an_unmerge_reaches_the_person_split_off(
    gw: httpx.AsyncClient,
) -> None:
    """An ESP's unsubscribe for Bob's address arrives while Bob is being split off Ann
    (the unmerge started first; both held up on Ann's row here so that each would read
    before the other commits): the batch waits for the split, and the withdrawal lands
    on Bob, who holds the mailbox now, not on Ann. Before the unmerge locked the
    linker's keys, the batch withdrew Ann and the split gave Bob the address opted in."""
    engine = _postgres_engine(gw)
    ann, _ = await shop_customer(gw, unique_email("during-ann"))
    bob_email = unique_email("during-bob")
    bob, bob_shop = await shop_customer(gw, bob_email)
    merged = await gql(gw, MERGE, into=ann, **{"from": bob}, reason="looked alike")
    assert "errors" not in merged, merged
    async with engine.connect() as holding:
        await holding.begin()
        await holding.execute(
            select(Customer.id).where(Customer.id == uuid.UUID(ann)).with_for_update()
        )
        unmerging = asyncio.create_task(
            gql(gw, UNMERGE, source="shopify", externalId=str(bob_shop))
        )
        await _until_waiting(engine, unmerging, rows=1)  # the split, on Ann's row
        event = sendgrid_event(bob_email, "unsubscribe", timestamp=int(time.time()) + 1)
        unsubscribing = asyncio.create_task(gw.post(**sendgrid_request([event])))
        # The batch, on the split's key of Bob's address (or, without it, on Ann's row).
        await _until_waiting(engine, unsubscribing, keys=1, rows=2)
        await holding.rollback()
    split = await asyncio.wait_for(unmerging, 20)
    assert "errors" not in split, split
    bob_now = split["data"]["unmergeCustomer"]["id"]
    response = await asyncio.wait_for(unsubscribing, 20)
    assert response.status_code == 200, response.text
    assert await _suppressed(gw, bob_now), response.text
    assert not await _suppressed(gw, ann), response.text


async def test_an_unsubscribe_during_a_merge_is_taken_by_the_survivor(
    gw: httpx.AsyncClient,
) -> None:
    """An ESP's unsubscribe for Bob's address looked Bob up just before a merge folded him
    into Ann committed (the merge holds Bob's row; the batch's first write waits on it):
    the batch is run again on a fresh lookup, not refused with a 500 for the row that
    named Bob, and the withdrawal lands on Ann, who holds Bob's address now."""
    engine = _postgres_engine(gw)
    ann, _ = await shop_customer(gw, unique_email("merging-ann"))
    bob_email = unique_email("merging-bob")
    bob, _ = await shop_customer(gw, bob_email)
    sessions = create_sessionmaker(engine)
    async with sessions.begin() as session:
        await merge_in(session, uuid.UUID(ann), uuid.UUID(bob), "looked alike")
        event = sendgrid_event(bob_email, "unsubscribe", timestamp=int(time.time()) + 1)
        unsubscribing = asyncio.create_task(gw.post(**sendgrid_request([event])))
        await _until_waiting(engine, unsubscribing, rows=1)
    response = await asyncio.wait_for(unsubscribing, 20)
    assert response.status_code == 200, response.text
    assert response.json()["events"][0]["customerId"] == ann, response.text
    assert await _suppressed(gw, ann)


@pytest.mark.parametrize("held", [False, True])
async def test_an_address_given_between_the_unmerges_read_and_its_locks_is_locked_too(
    gw: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, held: bool
) -> None:
    """Bob's shop record changes address after the unmerge read the keys to lock and
    before it locked them: the unmerge takes that address's key too before the split
    (or, when another transaction holds it, starts again holding every key, rather than
    wait out of order), and an unsubscribe for the new address reaches Bob."""
    engine = _postgres_engine(gw)
    ann, _ = await shop_customer(gw, unique_email("topup-ann"))
    bob, bob_shop = await shop_customer(gw, unique_email("topup-bob"))
    merged = await gql(gw, MERGE, into=ann, **{"from": bob}, reason="looked alike")
    assert "errors" not in merged, merged
    newer = unique_email("topup-bob-newer")
    real = unmerges.lock_keys  # type: ignore[attr-defined]  # patched where it is used
    calls: list[int] = []
    releasing: list[asyncio.Task[None]] = []

    async def moved_first(connection: Any, keys: Any, **options: Any) -> Any:
        calls.append(len(calls))
        if len(calls) == 1:
            await move(gw, bob_shop, newer, time.time() - 60)
            if held:  # another transaction holds the new address's key for a moment
                holder = await engine.connect()
                await holder.begin()
                await lock_keys(holder, [f"email:{email_parts(newer, DEFAULT_CONFIG)[1]}"])
                releasing.append(asyncio.create_task(_release_later(holder)))
        return await real(connection, keys, **options)

    monkeypatch.setattr(unmerges, "lock_keys", moved_first)
    split = await gql(gw, UNMERGE, source="shopify", externalId=str(bob_shop))
    assert "errors" not in split, split
    bob_now = split["data"]["unmergeCustomer"]["id"]
    assert split["data"]["unmergeCustomer"]["email"] == newer
    assert len(calls) == (2 if held else 1), calls  # held: once more, all keys in order
    assert await _unsubscribed(gw, newer) == bob_now
    assert not await _suppressed(gw, ann)

    await asyncio.gather(*releasing)


async def _release_later(holder: AsyncConnection) -> None:
    await asyncio.sleep(0.3)
    await holder.close()  # its transaction rolled back: the key let go
