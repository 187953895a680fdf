"""``scores build`` over a stored shop: every customer scored from the stored orders
and events, in one table; the model serving kept unless a new one does as well."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from gateway.db.models import Consent, Customer, Event
from gateway.db.score_models import CustomerScore, ScoreModel
from gateway.scores import build as build_module
from gateway.scores import store as store_module
from gateway.scores.build import build
from gateway.scores.features import LeakageError
from gateway.scores.rfm import SEGMENTS
from gateway.scores.store import ScoreStore
from tests.scores.conftest import NOW
from tests.scores.test_features import _peeking


async def _rows(store: ScoreStore) -> list[CustomerScore]:
    async with store._sessions() as session:
        return list((await session.scalars(select(CustomerScore))).all())


async def test_every_customer_gets_traits_and_scores(store: ScoreStore) -> None:
    summary = await build(store, horizon=30, now=NOW)
    rows = await _rows(store)
    assert len(rows) == summary.customers == 401
    ordered = [r for r in rows if r.frequency > 0]
    assert len(ordered) == summary.with_orders == 400
    assert {r.rfm_segment for r in ordered} <= set(SEGMENTS)
    assert all(r.recency_days is not None and r.recency_days >= 0 for r in ordered)
    assert all(0 <= (r.purchase_propensity or 0) <= 1 for r in rows)
    assert all(r.churn_risk is not None and 0 <= r.churn_risk <= 1 for r in ordered)
    assert {r.model_version for r in rows} == {summary.model_version}
    never = next(r for r in rows if r.frequency == 0)
    assert never.rfm_segment is None
    assert never.churn_risk is None
    # One order seen twice (shop and analytics) is one order.
    async with store._sessions() as session:
        orders = await session.scalar(
            select(func.count()).where(Event.type == "orders/create").select_from(Event)
        )
    assert sum(r.frequency for r in rows) <= (orders or 0)


async def test_one_time_buyers_long_gone_are_at_higher_churn_risk_than_recent_regulars(
    store: ScoreStore,
) -> None:
    """Stored churn risk was 1 - BG/NBD's P(alive): 0.0 for every one-time buyer."""
    await build(store, horizon=30, now=NOW)
    rows = await _rows(store)
    gone = [r.churn_risk for r in rows if r.frequency == 1 and (r.recency_days or 0) > 180]
    regular = [r.churn_risk for r in rows if r.frequency >= 3 and (r.recency_days or 999) < 30]
    assert len(gone) > 20
    assert len(regular) > 10
    assert min(float(r or 0) for r in gone) > max(float(r or 1) for r in regular)
    parameters = (await store.last_build()).parameters  # type: ignore[union-attr]
    assert parameters["churn"]["model"] == "pareto_nbd"
    assert len(parameters["churn"]["params"]) == 4


async def test_a_retrain_keeps_the_model_unless_the_new_one_does_as_well(
    store: ScoreStore,
) -> None:
    first = await build(store, horizon=30, now=NOW)
    again = await build(store, horizon=30, now=NOW + timedelta(seconds=1))
    assert again.model_version == first.model_version
    assert "kept" in again.decision
    retrained = await build(store, horizon=30, now=NOW + timedelta(seconds=2), retrain=True)
    async with store._sessions() as session:
        models = (await session.scalars(select(ScoreModel))).all()
    assert len(models) == 2
    assert sum(m.active for m in models) == 1
    active = next(m for m in models if m.active)
    assert active.version == retrained.model_version
    # Same data, same holdout: the new one ties and a tie goes to the newer model.
    assert retrained.model_version != first.model_version
    assert models[1].evaluation["previous"]["version"] == first.model_version


async def test_a_leaking_feature_fails_the_build_and_writes_nothing(store: ScoreStore) -> None:
    with pytest.raises(LeakageError):
        await build(store, horizon=30, now=NOW - timedelta(days=60), function=_peeking)
    assert await _rows(store) == []


async def test_training_draws_at_most_the_cap_and_the_model_says_so(store: ScoreStore) -> None:
    summary = await build(store, horizon=30, now=NOW, max_training_rows=150)
    async with store._sessions() as session:
        model = await session.scalar(select(ScoreModel).where(ScoreModel.active.is_(True)))
    assert model is not None
    assert model.version == summary.model_version
    evaluation = model.evaluation
    assert evaluation["training_rows_cap"] == 150
    assert evaluation["training_rows"] == 150  # drawn from the snapshots, no more
    assert evaluation["training_rows_available"] > 150  # 400 customers, several snapshots
    rows = await _rows(store)
    assert all(r.purchase_propensity is not None for r in rows)


async def test_a_retrain_that_fails_scoring_leaves_the_serving_model_active(
    store: ScoreStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new model is saved (and made active) with the scores it made: a retrain whose
    scoring failed (as one did on a feature of 1.8e308) had already activated a model
    that made none of the stored scores, which a refresh then served beside them."""
    first = await build(store, horizon=30, now=NOW)

    def failing(*args: object, **kwargs: object) -> list[tuple[object, ...]]:
        raise ValueError("Input X contains infinity")

    monkeypatch.setattr(build_module, "records_of", failing)
    with pytest.raises(ValueError, match="infinity"):
        await build(store, horizon=30, now=NOW + timedelta(seconds=2), retrain=True)
    assert await _models(store) == [(first.model_version, True)]
    assert {r.model_version for r in await _rows(store)} == {first.model_version}


async def test_a_retrain_whose_scores_fail_to_be_written_leaves_the_serving_model_active(
    store: ScoreStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above when the scores are made but writing them fails (a customer erased
    mid-build, whose row's foreign key then refuses the insert; the database gone): the
    model was saved and activated in a transaction of its own just before."""
    first = await build(store, horizon=30, now=NOW)

    async def failing(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the scores' insert failed")

    monkeypatch.setattr(store_module, "insert_tuples", failing)
    with pytest.raises(RuntimeError, match="insert failed"):
        await build(store, horizon=30, now=NOW + timedelta(seconds=2), retrain=True)
    assert await _models(store) == [(first.model_version, True)]


async def test_behaviour_counts_only_for_customers_who_said_yes_to_personalisation(
    store: ScoreStore,
) -> None:
    """A refusal keeps a customer's behaviour out of what profiles them: their stored
    engagement counts are 0 (as ``Customer.scores`` serves them) and the propensity model
    reads them so, where they were counted and fed to it whatever the customer said."""
    async with store._sessions.begin() as session:
        refused, granted = (
            await session.scalars(select(Customer.id).order_by(Customer.id).limit(2))
        ).all()
        for customer, yes in ((refused, False), (granted, True)):
            session.add(
                Consent(customer_id=customer, purpose="personalisation", granted=yes, source="t")
            )
            session.add_all(
                Event(
                    customer_id=customer,
                    source="segment",
                    event_id=f"page-{customer}-{n}",
                    type="page",
                    occurred_at=NOW - timedelta(days=n + 1),
                    properties={},
                )
                for n in range(5)
            )
    await build(store, horizon=30, now=NOW)
    rows = {r.customer_id: r for r in await _rows(store)}
    assert rows[granted].engagement_30d >= 5
    assert rows[refused].engagement_30d == 0
    assert rows[refused].engagement_90d == 0


async def _models(store: ScoreStore) -> list[tuple[str, bool]]:
    """Every saved model's version and whether it serves."""
    async with store._sessions() as session:
        models = (await session.scalars(select(ScoreModel))).all()
    return [(m.version, m.active) for m in models]
