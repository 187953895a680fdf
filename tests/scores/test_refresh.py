"""``scores refresh``: after a full build, only customers whose orders or events changed
(and new ones) are rescored, the way the build scored everyone; the others' rows stay
as they were, and an erased customer gets no row back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from gateway.db.models import Consent, Customer, Event
from gateway.db.score_models import CustomerScore, ScoreBuild
from gateway.scores.build import ScoresBusy, build
from gateway.scores.refresh import NoBuildError, refresh
from gateway.scores.store import COLUMNS, ScoreStore


async def _rows(store: ScoreStore) -> dict[uuid.UUID, CustomerScore]:
    async with store._sessions() as session:
        rows = (await session.scalars(select(CustomerScore))).all()
        return {row.customer_id: row for row in rows}


def _order(customer: uuid.UUID, name: str, total: float) -> Event:
    return Event(
        customer_id=customer,
        source="shopify",
        event_id=name,
        type="orders/create",
        occurred_at=datetime.now(UTC),
        properties={"order_id": name, "total_price": f"{total:.2f}"},
    )


def _values(row: CustomerScore) -> tuple[object, ...]:
    return tuple(getattr(row, c) for c in COLUMNS if c != "computed_at")


async def test_a_refresh_rescores_only_changed_and_new_customers(store: ScoreStore) -> None:
    with pytest.raises(NoBuildError):
        await refresh(store)
    await build(store, horizon=30)
    before = await _rows(store)
    buyers = sorted((r for r in before.values() if r.frequency > 1), key=lambda r: r.customer_id)
    a, b, gone = buyers[0], buyers[1], buyers[2]
    newcomer = uuid.uuid4()
    async with store._sessions.begin() as session:
        session.add(Customer(id=newcomer, email="new@example.com"))
    async with store._sessions.begin() as session:
        session.add(_order(a.customer_id, "new-a", 500.0))
        session.add(_order(newcomer, "new-c", 40.0))
        session.add(_order(gone.customer_id, "new-gone", 10.0))
    async with store._sessions.begin() as session:
        # Erasure deletes the customer; their events and scores go with them (cascade).
        customer = await session.get(Customer, gone.customer_id)
        await session.delete(customer)

    summary = await refresh(store)

    # A and the newcomer only: found, read and written.
    assert (summary.changed, summary.read, summary.refreshed) == (2, 2, 2)
    after = await _rows(store)
    assert len(after) == len(before)  # the newcomer in, the erased customer out
    assert gone.customer_id not in after
    fresh = after[a.customer_id]
    assert fresh.frequency == a.frequency + 1
    assert fresh.monetary == pytest.approx(a.monetary + 500.0)
    assert fresh.recency_days == 0
    assert fresh.purchase_propensity != a.purchase_propensity
    assert fresh.computed_at > a.computed_at
    untouched = after[b.customer_id]
    assert untouched.computed_at == b.computed_at
    assert _values(untouched) == _values(b)
    new = after[newcomer]
    assert (new.frequency, new.recency_days, new.rfm_segment) == (1, 0, "new")
    assert new.purchase_propensity is not None
    assert new.model_version == a.model_version
    # Nothing changed since: nothing to do.
    again = await refresh(store)
    assert (again.changed, again.refreshed) == (0, 0)


async def test_an_unchanged_history_refreshed_scores_as_the_build_did(store: ScoreStore) -> None:
    await build(store, horizon=30)
    before = await _rows(store)
    picked = sorted(k for k, row in before.items() if row.frequency > 0)[:50]  # with events
    async with store._sessions.begin() as session:
        # A touch that changes no order (the triggers stamp changed_at).
        await session.execute(
            update(Event).where(Event.customer_id.in_(picked)).values(source=Event.source)
        )
    summary = await refresh(store, batch=7)  # several batches
    assert summary.batches > 1
    after = await _rows(store)
    rescored = {k for k in after if after[k].computed_at != before[k].computed_at}
    assert rescored == set(picked)
    for key in picked:
        old, new = before[key], after[key]
        # Same quintile boundaries, BG/NBD fit and model: the same scores.
        assert (new.r_score, new.f_score, new.m_score) == (old.r_score, old.f_score, old.m_score)
        assert new.rfm_segment == old.rfm_segment
        assert new.purchase_propensity == pytest.approx(old.purchase_propensity, abs=1e-9)
        assert new.churn_risk == pytest.approx(old.churn_risk, abs=1e-9)


async def test_a_customer_erased_during_a_refresh_gets_no_row(store: ScoreStore) -> None:
    await build(store, horizon=30)
    before = await _rows(store)
    row = next(iter(before.values()))
    async with store._sessions.begin() as session:
        await session.delete(await session.get(Customer, row.customer_id))
    record = tuple(getattr(row, c) for c in COLUMNS)
    assert await store.rescore([record]) == 0
    assert row.customer_id not in await _rows(store)


async def test_a_refresh_waits_its_turn_behind_a_build_or_refresh(store: ScoreStore) -> None:
    await build(store, horizon=30)
    async with store.exclusive() as mine:
        assert mine
        with pytest.raises(ScoresBusy):  # a cron run overlapping the last one
            await refresh(store)
        with pytest.raises(ScoresBusy):
            await build(store, horizon=30)
    assert (await refresh(store)).changed == 0


async def test_a_personalisation_consent_changed_since_the_build_is_rescored(
    store: ScoreStore,
) -> None:
    """Behaviour is read only with a yes to personalisation: a customer who withdraws it
    after the build is rescored without it by the next refresh (and one who grants it,
    with it), not left profiled by their behaviour until the next full build."""
    async with store._sessions.begin() as session:
        customer = (await session.scalars(select(Customer.id).order_by(Customer.id))).first()
        assert customer is not None
        session.add(
            Consent(customer_id=customer, purpose="personalisation", granted=True, source="t")
        )
        session.add_all(
            Event(
                customer_id=customer,
                source="segment",
                event_id=f"page-{n}",
                type="page",
                occurred_at=datetime.now(UTC),
                properties={},
            )
            for n in range(4)
        )
    await build(store, horizon=30)
    assert (await _rows(store))[customer].engagement_30d >= 4
    async with store._sessions.begin() as session:
        await session.execute(
            update(Consent).where(Consent.customer_id == customer).values(granted=False)
        )
    summary = await refresh(store)
    assert summary.changed == 1
    assert (await _rows(store))[customer].engagement_30d == 0
    async with store._sessions.begin() as session:
        await session.execute(
            update(Consent).where(Consent.customer_id == customer).values(granted=True)
        )
    assert (await refresh(store)).changed == 1
    assert (await _rows(store))[customer].engagement_30d >= 4


async def test_a_refresh_after_a_build_without_a_churn_fit_scores_churn_from_bgnbd(
    store: ScoreStore,
) -> None:
    """A build from before churn risk had a fit of its own stored only BG/NBD's; a
    refresh after it still runs, and scores churn as BG/NBD's chance of no order in
    the same 90 days: a one-time buyer long gone is at high risk (1 - P(alive), the
    old churn risk, put them all at 0.0)."""
    await build(store, horizon=30)
    before = await _rows(store)
    async with store._sessions.begin() as session:
        last = (await session.scalars(select(ScoreBuild))).one()
        last.parameters = {k: v for k, v in last.parameters.items() if k != "churn"}
    gone = sorted(k for k, r in before.items() if r.frequency == 1 and (r.recency_days or 0) > 300)[
        :5
    ]
    regular = sorted(
        k for k, r in before.items() if r.frequency >= 3 and (r.recency_days or 999) < 30
    )[:5]
    assert len(gone) == len(regular) == 5
    async with store._sessions.begin() as session:
        await session.execute(
            update(Event).where(Event.customer_id.in_(gone + regular)).values(source=Event.source)
        )
    summary = await refresh(store)
    assert summary.refreshed == 10
    after = await _rows(store)
    risks = {k: after[k].churn_risk for k in gone + regular}
    assert all(r is not None and 0 <= r <= 1 for r in risks.values())
    lapsed = [float(risks[k] or 0) for k in gone]
    active = [float(risks[k] or 1) for k in regular]
    assert min(lapsed) > 0.9
    assert min(lapsed) > max(active)


async def test_a_refresh_after_a_build_with_no_churn_fit_stores_none_as_the_build_did(
    store: ScoreStore,
) -> None:
    """A build whose Pareto/NBD fit failed stores no churn risk for anyone; a refresh
    after it must not fill the column from another model for the customers it
    rescores (one column, two definitions: a segment on churnRisk would pick exactly
    the recently active)."""
    await build(store, horizon=30)
    async with store._sessions.begin() as session:
        last = (await session.scalars(select(ScoreBuild))).one()
        last.parameters = {**last.parameters, "churn": {"model": "none"}}
    # Customers with events of their own: touching the events of one with none (a
    # customer with only a profile) changes nothing, so it is not refreshed.
    async with store._sessions() as session:
        with_events = set((await session.scalars(select(Event.customer_id).distinct())).all())
    changed = sorted(k for k in await _rows(store) if k in with_events)[:5]
    async with store._sessions.begin() as session:
        await session.execute(
            update(Event).where(Event.customer_id.in_(changed)).values(source=Event.source)
        )
    assert (await refresh(store)).refreshed == 5
    after = await _rows(store)
    assert [after[k].churn_risk for k in changed] == [None] * 5
