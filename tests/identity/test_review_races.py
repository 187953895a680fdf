"""Resolving a review while records move between customers: the resolution acts on where
the two records are when it commits (gateway/identity/review_state.py), and an unmerge
asks again the questions its merge had answered. Each race is made certain by running
the other writer inside the window (a patched read), on both backends."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.identity_models import IdentityNeverLink, IdentityReview
from gateway.db.models import Customer, Identity
from gateway.errors import Conflict
from gateway.identity import (
    IdentityConfig,
    Resolver,
    merge_customers,
    reviews,
    unmerge_customer,
)
from gateway.identity.linkage import lookup
from gateway.identity.reviews import ReviewDecision, ReviewQueue
from tests.identity.test_identity_db import sessions  # noqa: F401
from tests.identity.test_unmerge_races import _someone


async def test_a_review_resolved_while_its_candidate_is_split_off_merges_with_the_split(
    sessions: async_sessionmaker[AsyncSession],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A steward merges a review of Xavier's record against Bob's, while Bob, merged into
    Ann by mistake, is split back out, started between the review's read and its merge:
    Xavier joins the customer holding Bob's record when the merge commits. On Postgres
    the split commits in that window, and Xavier joins Bob, never Ann (whom his record
    was not compared with); on SQLite the resolution holds the write lock from its
    start, so the split waits for it (Xavier joins Ann and Bob, then Bob alone leaves,
    as a record linked to a merged customer stays with the survivor)."""
    resolver = Resolver(sessions)
    ann, bob, xavier = (_someone(tag) for tag in ("ann", "bob", "xavier"))
    for record in (ann, bob, xavier):
        await resolver.link_one(record, "crm")
    ids = await _identities(sessions, ann, bob, xavier)
    await merge_customers(sessions, ids["ann"][1], ids["bob"][1], "looked alike")
    review = await _opened(sessions, ids["xavier"][0], ids["bob"][0], ids["ann"][1])
    real = reviews._shaped
    split: list[asyncio.Task[uuid.UUID]] = []
    postgres = sessions.kw["bind"].dialect.name == "postgresql"

    async def split_after_the_read(session: AsyncSession, found: Any) -> Any:
        shaped = await real(session, found)
        if not split:
            split.append(asyncio.create_task(unmerge_customer(sessions, "crm", bob["external_id"])))
            # Postgres: nothing it needs is held yet, so it commits (however loaded the
            # machine); SQLite: it waits for the write lock, a moment is enough to show it.
            await asyncio.wait(split, timeout=30 if postgres else 1)
        return shaped

    monkeypatch.setattr(reviews, "_shaped", split_after_the_read)
    queue = ReviewQueue(sessions)
    resolution = await queue.resolve(review.id, ReviewDecision.MERGE, "same person", "steward")
    split_first = split[0].done()
    bob_now = await asyncio.wait_for(split[0], 30)
    after = await _identities(sessions, ann, bob, xavier)
    assert after["bob"][1] == bob_now != ids["ann"][1]
    assert split_first == postgres
    if split_first:
        assert after["xavier"][1] == bob_now, "Xavier joined the customer Bob had left"
        assert resolution.merged_into == bob_now
    else:
        assert after["xavier"][1] == ids["ann"][1]
    assert after["ann"][1] == ids["ann"][1]
    assert not _deadlocks(caplog)  # the resolution locks as the unmerge does


def _deadlocks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The operations run again after a deadlock while the test ran."""
    return [
        str(getattr(r, "operation", ""))
        for r in caplog.records
        if r.getMessage() == "transaction retried" and getattr(r, "reason", "") == "deadlock"
    ]


async def _identities(
    made: async_sessionmaker[AsyncSession], *records: dict[str, Any]
) -> dict[str, tuple[int, uuid.UUID]]:
    """Each record's identity and its customer now, by the tag its address starts with."""
    async with made() as session:
        found = {
            external_id: (identity_id, customer_id)
            for identity_id, external_id, customer_id in await session.execute(
                select(Identity.id, Identity.external_id, Identity.customer_id).where(
                    Identity.external_id.in_([r["external_id"] for r in records])
                )
            )
        }
    return {r["email"].split(".")[0]: found[r["external_id"]] for r in records}


async def test_a_review_a_merge_settled_is_open_again_once_the_merge_is_undone(
    sessions: async_sessionmaker[AsyncSession],  # noqa: F811
) -> None:
    """The linker left Bob's record against Ann's for a person; a merge of the two settled
    the question without one, and an unmerge undid it: the pair is open again, listed for
    a person, against the customer each record is in now. A review a person resolved
    stays as they resolved it."""
    resolver = Resolver(sessions)
    ann, bob, cid = (_someone(tag) for tag in ("ann", "bob", "cid"))
    for record in (ann, bob, cid):
        await resolver.link_one(record, "crm")
    ids = await _identities(sessions, ann, bob, cid)
    by_merge, by_person = [
        await _opened(sessions, ids[tag][0], ids["ann"][0], ids["ann"][1]) for tag in ("bob", "cid")
    ]
    queue = ReviewQueue(sessions)
    await queue.resolve(by_person.id, ReviewDecision.MERGE, "same person", "steward")
    await merge_customers(sessions, ids["ann"][1], ids["bob"][1], "looked alike")
    mine = {by_merge.id, by_person.id}

    async def pending() -> list[tuple[uuid.UUID, uuid.UUID]]:
        """This test's open reviews (the database holds other tests' too)."""
        found, after = [], None
        while True:
            page = await queue.pending(first=100, after=after)
            found += [
                (r.record.customer_id, r.candidate_customer_id) for r in page.items if r.id in mine
            ]
            if not page.has_next_page:
                return found
            after = page.end_cursor

    assert await pending() == []
    bob_now = await unmerge_customer(sessions, "crm", bob["external_id"])
    await unmerge_customer(sessions, "crm", cid["external_id"])
    assert await pending() == [(bob_now, ids["ann"][1])]
    async with sessions() as session:
        person = await session.get(IdentityReview, by_person.id)
        assert person is not None
        assert (person.status, person.resolved_by) == ("merged", "steward")


async def _bob_and_his_double(
    sessions: async_sessionmaker[AsyncSession],  # noqa: F811
) -> tuple[Resolver, dict[str, Any], dict[str, Any], int]:
    """Bob, and Xavier: Bob's name, birth date and address under another address, split
    back out of Bob once the linker joined them; the review of Xavier against Bob, open.
    (resolver, bob, xavier, review id)"""
    resolver = Resolver(sessions)
    bob = _someone("bob")
    domain = bob["email"].split(".", 1)[1]
    xavier = {**bob, "external_id": uuid.uuid4().hex, "email": f"xavier.{domain}"}
    await resolver.link_one(bob, "crm")
    await resolver.link_one(xavier, "shop")
    await unmerge_customer(sessions, "shop", xavier["external_id"])
    ids = await _identities(sessions, bob, xavier)
    assert ids["bob"][1] != ids["xavier"][1]
    review = await _opened(sessions, ids["xavier"][0], ids["bob"][0], ids["bob"][1])
    return resolver, bob, xavier, review.id


async def _opened(
    made: async_sessionmaker[AsyncSession], record: int, candidate: int, customer: uuid.UUID
) -> IdentityReview:
    """An open review of identity ``record`` against ``candidate`` (in ``customer``), as
    the linker leaves one in the review band."""
    review = IdentityReview(
        identity_id=record,
        candidate_identity_id=candidate,
        candidate_customer_id=customer,
        score=0.7,
        levels={},
        reason="score",
    )
    async with made.begin() as session:
        session.add(review)
    return review


def _yvonne(bob: dict[str, Any]) -> dict[str, Any]:
    """A third record like Bob (and so like Xavier): linked, it would join the two."""
    domain = bob["email"].split(".", 1)[1]
    return {**bob, "external_id": uuid.uuid4().hex, "email": f"yvonne.{domain}"}


async def test_a_pair_kept_apart_while_a_batch_decides_is_not_joined_by_it(
    sessions: async_sessionmaker[AsyncSession],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A steward keeps Xavier and Bob apart just after a batch holding Yvonne (like both)
    read the pairs to keep apart: the batch, deciding on what it read, would fold the
    two into one customer. It finds the new pair once it holds their customers, and is
    decided again."""
    resolver, bob, xavier, review_id = await _bob_and_his_double(sessions)
    queue = ReviewQueue(sessions)
    real = lookup._load_never
    kept: list[object] = []

    async def keep_apart_after_the_read(connection: Any, state: Any) -> None:
        await real(connection, state)
        if not kept:
            decided = queue.resolve(review_id, ReviewDecision.KEEP_APART, "not him", "steward")
            kept.append(await asyncio.create_task(decided))

    monkeypatch.setattr(lookup, "_load_never", keep_apart_after_the_read)
    await resolver.link_one(_yvonne(bob), "web")
    after = await _identities(sessions, bob, xavier)
    assert kept
    assert after["bob"][1] != after["xavier"][1], "a batch joined a pair kept apart"
    assert await _status(sessions, review_id) == "kept_apart"


async def test_a_batch_run_while_a_pair_is_being_kept_apart_ends_as_one_or_the_other(
    sessions: async_sessionmaker[AsyncSession],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The batch with Yvonne runs while the steward's keep-apart has read the pair and
    not yet written it. Either runs wholly first: the pair kept apart and the batch not
    joining them, or the batch joining them and the steward told the review was
    settled; never the pair kept apart and joined."""
    resolver, bob, xavier, review_id = await _bob_and_his_double(sessions)
    real = reviews._shaped
    batch: list[asyncio.Task[Any]] = []

    async def batch_after_the_read(session: AsyncSession, found: Any) -> Any:
        shaped = await real(session, found)
        if not batch:
            batch.append(asyncio.create_task(resolver.link_one(_yvonne(bob), "web")))
            await asyncio.wait(batch, timeout=1.5)
        return shaped

    monkeypatch.setattr(reviews, "_shaped", batch_after_the_read)
    queue = ReviewQueue(sessions)
    try:
        await queue.resolve(review_id, ReviewDecision.KEEP_APART, "not him", "steward")
        refused = False
    except Conflict:
        refused = True
    await asyncio.wait_for(batch[0], 30)
    after = await _identities(sessions, bob, xavier)
    joined = after["bob"][1] == after["xavier"][1]
    status = await _status(sessions, review_id)
    assert (refused, joined, status) in ((False, False, "kept_apart"), (True, True, "merged"))
    # Customers, then reviews, on both sides: no cycle for Postgres to break.
    assert not _deadlocks(caplog)


@pytest.mark.parametrize("case", ["split", "held", "golden"])
async def test_a_review_over_the_identity_limit_merges_only_while_its_match_holds(
    sessions: async_sessionmaker[AsyncSession],  # noqa: F811
    case: str,
) -> None:
    """Xavier shares Bob's address while Bob is merged into Ann and their customer is
    full: the review names the customer, not Bob's record. Once Bob is split off (with
    his address), a steward's merge is refused (Xavier would join Ann, with whom he
    shares nothing) and keeping them apart still works; while Bob is there (the limit
    raised since), the merge joins Xavier to Ann and Bob; so it does when the address
    Xavier shares is the customer's own (given through the API: no record has it)."""
    config = IdentityConfig(max_identities_per_customer=2)
    resolver = Resolver(sessions, config)
    ann, bob = _someone("ann"), _someone("bob")
    for record in (ann, bob):
        await resolver.link_one(record, "crm")
    ids = await _identities(sessions, ann, bob)
    await merge_customers(sessions, ids["ann"][1], ids["bob"][1], "looked alike", config=config)
    shared = bob["email"]
    if case == "golden":
        shared = f"golden.{uuid.uuid4().hex[:10]}@corp.example.com"
        async with sessions.begin() as session:
            await session.execute(
                update(Customer).where(Customer.id == ids["ann"][1]).values(email=shared)
            )
    xavier = {**_someone("xavier"), "email": shared}
    decision = await resolver.link_one(xavier, "shop")
    assert decision.review is not None
    assert decision.review.reason == "identity_limit"
    async with sessions() as session:
        (review_id,) = await session.scalars(
            select(IdentityReview.id).where(
                IdentityReview.candidate_customer_id == ids["ann"][1],
                IdentityReview.candidate_identity_id.is_(None),
            )
        )
    named = {**xavier, "email": f"xavier.{shared}"}  # looked up by its tag
    if case != "split":
        queue = ReviewQueue(sessions, IdentityConfig(max_identities_per_customer=3))
        await queue.resolve(review_id, ReviewDecision.MERGE, "same", "steward")
        after = await _identities(sessions, ann, named)
        assert after["xavier"][1] == ids["ann"][1]
        return
    await unmerge_customer(sessions, "crm", bob["external_id"], config=config)
    queue = ReviewQueue(sessions, config)
    with pytest.raises(Conflict, match="no longer holds the address or phone"):
        await queue.resolve(review_id, ReviewDecision.MERGE, "same", "steward")
    assert await _status(sessions, review_id) == "open"
    await queue.resolve(review_id, ReviewDecision.KEEP_APART, "not her", "steward")
    async with sessions() as session:
        pairs = list(await session.scalars(select(IdentityNeverLink.review_id)))
    assert review_id in pairs
    after = await _identities(sessions, ann, named)
    assert after["xavier"][1] != ids["ann"][1]


async def test_a_pair_kept_apart_stays_so_when_its_customers_are_merged_by_hand(
    sessions: async_sessionmaker[AsyncSession],  # noqa: F811
) -> None:
    """A steward kept Xavier and Bob apart; someone then merges their customers by hand
    anyway: the review still says what the steward decided (a merge settles only the
    open reviews between the two)."""
    _, bob, xavier, review_id = await _bob_and_his_double(sessions)
    await ReviewQueue(sessions).resolve(review_id, ReviewDecision.KEEP_APART, "no", "steward")
    ids = await _identities(sessions, bob, xavier)
    await merge_customers(sessions, ids["bob"][1], ids["xavier"][1], "by hand")
    assert await _status(sessions, review_id) == "kept_apart"


async def _status(sessions: async_sessionmaker[AsyncSession], review_id: int) -> str:  # noqa: F811
    async with sessions() as session:
        status = await session.scalar(
            select(IdentityReview.status).where(IdentityReview.id == review_id)
        )
    assert status is not None
    return status
