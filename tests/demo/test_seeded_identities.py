"""The seed writes what the production write paths write, so the demo behaves as real
data does: every value and consent statement names the identity it came from (a merge
then an unmerge hands each person back exactly their own), and customer ids are not
derived from personal data (an id made from the e-mail let anyone holding a
pseudonymised export confirm guessed addresses)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from demo.people.population import Person, population
from demo.seed import CRM_SOURCE, customer_id_for
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.identity_models import IdentityRecord
from gateway.db.models import Attribute, Consent, ConsentChange, Customer, Identity
from gateway.identity.merges import merge_customers
from gateway.identity.unmerges import unmerge_customer
from tests.demo_database import demo_database

_PURPOSES = {
    "email_marketing": "email_marketing_consent",
    "personalisation": "personalisation_consent",
    "analytics": "analytics_consent",
}
_CONTACT = ("email", "first_name", "last_name", "phone")
# The namespace the seed once made ids from (uuid5 of the e-mail), and the standard ones.
_EMAIL_NAMESPACES = (
    uuid.UUID("6f1c2d4e-8a5b-4c3d-9e7f-0a1b2c3d4e5f"),
    uuid.NAMESPACE_DNS,
    uuid.NAMESPACE_URL,
    uuid.NAMESPACE_OID,
    uuid.NAMESPACE_X500,
)


def _consents(person: Person) -> dict[str, bool]:
    return {purpose: getattr(person, field) for purpose, field in _PURPOSES.items()}


def _pair(people: tuple[Person, ...]) -> tuple[Person, Person]:
    """Two people whose consents differ, a withdrawal on each side: the survivor (into)
    made the customer first, so the split-off person's statements are the newer ones and
    none of their grants is followed by one the survivor made later (whose grant a later
    statement of the merged customer follows is never assumed: consent_split.py)."""
    for into in people:
        for from_ in people:
            a, b = _consents(into), _consents(from_)
            if (
                into.created_at < from_.created_at
                and a != b
                and False in a.values()
                and False in b.values()
                and True in b.values()
            ):
                return into, from_
    raise AssertionError("no such pair in the population")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_merge_then_unmerge_gives_each_seeded_person_their_own(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    people = population(40)
    with demo_database(backend, "seedsplit", people, tmp_path_factory, model=False) as url:
        asyncio.run(_merge_and_split(url, *_pair(people)))


async def _merge_and_split(url: str, into: Person, from_: Person) -> None:
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    try:
        kept, gone = customer_id_for(into), customer_id_for(from_)
        async with sessions() as session:
            # The CRM's identity first: split off, it is the person.
            rows = await session.execute(
                select(Identity.source, Identity.external_id).where(Identity.customer_id == gone)
            )
            identities = sorted(rows.all(), key=lambda row: row[0] != CRM_SOURCE)
        assert len(identities) == 4
        await merge_customers(sessions, kept, gone, "test: the same person?")
        split = [await unmerge_customer(sessions, *identity) for identity in identities]
        async with sessions() as session:
            # The survivor: their own values only, golden and among the attributes.
            await _assert_profile(session, kept, into)
            # The split-off CRM identity is the person again: contact details, consent.
            await _assert_profile(session, split[0], from_)
            for other in split[1:]:  # the other systems' records: theirs, nobody else's
                values = await _values(session, other)
                assert values <= {(n, getattr(from_, n)) for n in (*_CONTACT, "city")}
                assert values, "each split-off identity takes what it reported"
                assert await _current(session, other) == {}
    finally:
        await engine.dispose()


async def _values(session: AsyncSession, customer: uuid.UUID) -> set[tuple[str, str | None]]:
    rows = await session.execute(
        select(Attribute.name, Attribute.value).where(
            Attribute.customer_id == customer, Attribute.name.in_([*_CONTACT, "city"])
        )
    )
    return {(name, value) for name, value in rows}


async def _current(session: AsyncSession, customer: uuid.UUID) -> dict[str, bool]:
    rows = await session.execute(
        select(Consent.purpose, Consent.granted).where(Consent.customer_id == customer)
    )
    return dict(rows.all())


async def _assert_profile(session: AsyncSession, customer: uuid.UUID, person: Person) -> None:
    row = await session.get(Customer, customer)
    assert row is not None
    assert {n: getattr(row, n) for n in _CONTACT} == {n: getattr(person, n) for n in _CONTACT}
    own = {(n, getattr(person, n)) for n in (*_CONTACT, "city")}
    assert await _values(session, customer) == own
    assert await _current(session, customer) == _consents(person)
    history = await session.execute(
        select(ConsentChange.purpose, ConsentChange.granted).where(
            ConsentChange.customer_id == customer
        )
    )
    assert sorted((p, g) for p, g in history) == sorted(_consents(person).items())


def test_seeded_ids_are_stable_and_not_made_from_emails() -> None:
    people = population(200)
    ids = [customer_id_for(person) for person in people]
    assert len(set(ids)) == len(ids)
    for person, customer in zip(people, ids, strict=True):
        for namespace in _EMAIL_NAMESPACES:
            assert customer != uuid.uuid5(namespace, person.email)
            assert customer != uuid.uuid5(namespace, person.email.lower())
    # The same people, with the same ids, whatever the demo's anchor (README).
    elsewhen = population(200, epoch=datetime(2020, 1, 1, tzinfo=UTC))
    assert [customer_id_for(person) for person in elsewhen] == ids


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_seeded_value_and_statement_names_its_identity(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    people = population(25)
    with demo_database(backend, "seedids", people, tmp_path_factory, model=False) as url:
        asyncio.run(_named(url, people))


async def _named(url: str, people: tuple[Person, ...]) -> None:
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as session:
            rows = await session.execute(select(Customer.email, Customer.id))
            stored = dict(rows.all())
            assert stored == {p.email: customer_id_for(p) for p in people}
            for model in (Attribute, ConsentChange):
                unnamed = select(func.count()).where(model.identity_id.is_(None))
                assert await session.scalar(unnamed) == 0, model.__tablename__
            identities = await session.scalar(select(func.count()).select_from(Identity))
            records = await session.scalar(select(func.count()).select_from(IdentityRecord))
            assert identities == records == 4 * len(people)
    finally:
        await engine.dispose()
