"""Unmerges while the linker writes: a split identity's own updates end with it.

A customer with many merged-in identities is split apart, identity by identity, while
import batches update some of those identities with new addresses. Whichever commits
first, each split-off customer ends with its identity's newest address, and the
survivor holds none of them (an unsubscribe for it would otherwise withdraw the wrong
person). On SQLite the linker and the unmerge hold the database's write lock from their
first statement: before, each read outside any transaction, and an unmerge that read
before a batch committed and wrote after it left the batch's new address with the
survivor (gateway/identity/linkage/resolution.lock_keys)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Attribute, Customer, Identity
from gateway.identity import Resolver, merge_customers, prepare, unmerge_customer
from tests.identity.test_identity_db import person, sessions  # noqa: F401

_MERGED = 40  # identities merged into the survivor, then split off one by one
_BATCHES = 3
_BATCH = 1000  # records a batch: new people, and _UPDATED of the merged identities
_UPDATED = 5


def _someone(tag: str) -> dict[str, Any]:
    """A person no other record resembles (their own names, date, street and town)."""
    t = uuid.uuid4().hex
    return person(
        first_name=f"F{t[:6]}",
        last_name=f"L{t[6:12]}",
        date_of_birth=f"19{40 + int(t[12:14], 16) % 60}-0{1 + int(t[14], 16) % 9}-1{t[15]}"
        if t[15].isdigit()
        else "1970-01-10",
        address=f"{int(t[16:19], 16)} {t[19:24]} Street",
        city=f"C{t[24:28]}",
        postcode=str(1000 + int(t[28:31], 16) % 9000),
        email=f"{tag}.{t[:10]}@corp.example.com",
    )


async def test_updates_of_identities_being_split_off_end_with_them(
    sessions: async_sessionmaker[AsyncSession],  # noqa: F811
) -> None:
    resolver = Resolver(sessions)
    ann = await resolver.link_one(_someone("ann"), "crm")
    merged = []
    for n in range(_MERGED):
        record = _someone(f"p{n}")
        decision = await resolver.link_one(record, "crm")
        await merge_customers(sessions, ann.customer_id, decision.customer_id, "looked alike")
        merged.append(record)
    newest: dict[str, str] = {}
    batches = []
    for b in range(_BATCHES):
        rows = [
            prepare(_someone(f"new{b}"), "imp", resolver.config) for _ in range(_BATCH - _UPDATED)
        ]
        for n in range(_UPDATED):
            record = merged[(b * _UPDATED + n) % _MERGED]
            address = f"upd{b}.{uuid.uuid4().hex[:10]}@corp.example.com"
            newest[record["external_id"]] = address
            rows.append(prepare({**record, "email": address}, "crm", resolver.config))
        batches.append(rows)
    importing = True

    async def split_all() -> list[uuid.UUID]:
        split = []
        for record in merged:
            if not importing:
                break
            split.append(await unmerge_customer(sessions, "crm", record["external_id"]))
        return split

    splitting = asyncio.create_task(split_all())
    for rows in batches:
        await resolver.link(rows)
    importing = False
    assert await asyncio.wait_for(splitting, 120), "no unmerge ran during the import"
    wrong = []
    async with sessions() as session:
        for external_id, address in newest.items():
            owner = await session.scalar(
                select(Identity.customer_id).where(
                    Identity.source == "crm", Identity.external_id == external_id
                )
            )
            holders = set(
                await session.scalars(
                    select(Attribute.customer_id).where(
                        Attribute.name == "email", Attribute.value == address
                    )
                )
            )
            email = await session.scalar(select(Customer.email).where(Customer.id == owner))
            if owner != ann.customer_id and (email != address or holders != {owner}):
                wrong.append((external_id, email == address, ann.customer_id in holders))
    assert not wrong, wrong
