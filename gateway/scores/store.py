"""The scores' SQL: orders and engagement read from the stored events, the computed
rows written in bulk, the propensity models kept and chosen.

Orders are events: Shopify ``orders/*`` webhooks (``order_id``, ``total_price``) and
Segment ``Order Completed`` calls (``properties.order_id``, ``properties.total`` or
``revenue``); an order seen through both counts once, at its earliest time.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    String,
    Table,
    delete,
    exists,
    func,
    or_,
    select,
    union,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from gateway.db.bulk import insert_tuples
from gateway.db.locks import committed_before, lock_customers, run_lock
from gateway.db.models import ORDER_TYPES, Consent, Customer, Event, order_key
from gateway.db.score_models import CustomerScore, ScoreBuild, ScoreModel
from gateway.privacy.consent import Purpose
from gateway.scores.ledger import Ledger, ledger_of
from gateway.scores.model_seal import UntrustedModel, seal, unseal

_BEHAVIOURAL = or_(Event.type.like("track:%"), Event.type == "page")
_TABLE: Table = CustomerScore.__table__  # type: ignore[assignment]
COLUMNS = tuple(c.name for c in _TABLE.columns)


@dataclass(frozen=True)
class CustomerScores:
    """One customer's stored traits and scores, as served."""

    recency_days: int | None
    frequency: int
    monetary: float
    average_order_value: float | None
    days_between_orders: float | None
    rfm_segment: str | None
    engagement_30d: int
    engagement_90d: int
    purchase_propensity: float | None
    churn_risk: float | None
    model_version: str
    computed_at: datetime

    @classmethod
    def of(cls, row: CustomerScore) -> CustomerScores:
        return cls(
            row.recency_days,
            row.frequency,
            row.monetary,
            row.average_order_value,
            row.days_between_orders,
            row.rfm_segment,
            row.engagement_30d,
            row.engagement_90d,
            row.purchase_propensity,
            row.churn_risk,
            row.model_version,
            row.computed_at,
        )

    def without_behaviour(self) -> CustomerScores:
        """As served to a customer without personalisation consent: their engagement
        counts are behaviour, answered as for a customer with no history."""
        return replace(self, engagement_30d=0, engagement_90d=0)

    def liquid(self) -> dict[str, Any]:
        """As a template reads it: ``customer.scores.purchase_propensity``."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class StoredModel:
    version: str
    horizon_days: int
    evaluation: dict[str, Any]
    estimator: bytes


class epoch_day(FunctionElement[int]):  # lower case: a SQL function, as SQLAlchemy names them
    """A moment's UTC day number (days since 1970-01-01), computed in the database."""

    type = BigInteger()
    inherit_cache = True


@compiles(epoch_day, "postgresql")
def _epoch_day_postgres(element: epoch_day, compiler: SQLCompiler, **kw: Any) -> str:
    moment = compiler.process(element.clauses, **kw)
    return f"CAST(floor(extract(epoch FROM {moment}) / 86400) AS BIGINT)"


@compiles(epoch_day, "sqlite")
def _epoch_day_sqlite(element: epoch_day, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps UTC wall-clock text (UtcDateTime); julianday's epoch is noon, 4714 BC.
    moment = compiler.process(element.clauses, **kw)
    return f"CAST(julianday({moment}) - 2440587.5 AS INTEGER)"


def _number(*values: Any) -> float:
    for value in values:
        try:
            if value is not None:
                return float(value)
        except (TypeError, ValueError):
            continue
    return 0.0


class ScoreStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], model_key: bytes | None) -> None:
        """``model_key`` seals the stored models (``model_seal.deployment_model_key``);
        None for a store that only reads and writes scores (the server)."""
        self._sessions = sessions
        self._model_key = model_key

    def _key(self) -> bytes:
        if self._model_key is None:
            raise UntrustedModel("this process holds no key for score models: none loaded")
        return self._model_key

    def seal(
        self, version: str, horizon_days: int, evaluation: dict[str, Any], estimator: Any
    ) -> StoredModel:
        """A trained model as its row stores it: pickled, and signed with the row."""
        sealed = seal(
            estimator,
            self._key(),
            version=version,
            horizon_days=horizon_days,
            evaluation=evaluation,
        )
        return StoredModel(version, horizon_days, evaluation, sealed)

    def unseal(self, stored: StoredModel) -> Any:
        """A stored model, loaded only if this deployment signed it for this row
        (``UntrustedModel``)."""
        return unseal(
            stored.estimator,
            self._key(),
            version=stored.version,
            horizon_days=stored.horizon_days,
            evaluation=stored.evaluation,
        )

    async def ledger(
        self, events_since: datetime, customers: Sequence[uuid.UUID] | None = None
    ) -> Ledger:
        """Every customer (those without an order too) -- or only ``customers`` -- their
        orders, and their behavioural events from ``events_since`` on (those who said yes
        to personalisation).

        The database does the row work: an order's copies (shop webhook, analytics
        call, updates) become one row at its earliest moment, and moments come as day
        numbers. Python then only shapes arrays (on 100,000 customers, reading every
        copy with its JSON and ``datetime`` into a dict took most of the read)."""
        only = () if customers is None else (Event.customer_id.in_(customers),)
        who = select(Customer.id)
        if customers is not None:
            who = who.where(Customer.id.in_(customers))
        props = Event.properties
        inner = props["properties"]
        key = order_key(Event)
        copies = (
            select(
                Event.customer_id.label("customer"),
                epoch_day(Event.occurred_at).label("day"),
                props["total_price"].as_string().label("total"),
                inner["total"].as_string().label("inner_total"),
                inner["revenue"].as_string().label("revenue"),
                # An order without an id is its own order: numbered apart by row.
                func.row_number()
                .over(
                    partition_by=(
                        Event.customer_id,
                        func.coalesce(key, "#" + Event.id.cast(String)),
                    ),
                    order_by=(Event.occurred_at, Event.id),
                )
                .label("copy"),
            )
            .where(Event.customer_id.is_not(None), Event.type.in_(ORDER_TYPES), *only)
            .subquery()
        )
        orders = select(
            copies.c.customer,
            copies.c.day,
            copies.c.total,
            copies.c.inner_total,
            copies.c.revenue,
        ).where(copies.c.copy == 1)
        # Behaviour only of customers with a stored yes to personalisation: for the
        # others it is not used to profile them (their engagement counts are 0, as
        # ``Customer.scores`` serves them, and the propensity model reads them as such).
        consented = exists().where(
            Consent.customer_id == Event.customer_id,
            Consent.purpose == Purpose.PERSONALISATION.value,
            Consent.granted.is_(True),
        )
        events = select(Event.customer_id, epoch_day(Event.occurred_at)).where(
            Event.customer_id.is_not(None),
            _BEHAVIOURAL,
            Event.occurred_at >= events_since,
            consented,
            *only,
        )
        async with self._sessions() as session:
            order_rows = (await session.execute(orders)).all()
            event_rows = (await session.execute(events)).all()
            # Read last: a customer deleted meanwhile is dropped with their rows below.
            ids = (await session.scalars(who)).all()
        index: dict[uuid.UUID | None, int] = {customer: i for i, customer in enumerate(ids)}
        order_rows = [row for row in order_rows if row[0] in index]
        event_rows = [row for row in event_rows if row[0] in index]
        return ledger_of(
            [str(k) for k in ids],
            np.fromiter((index[row[0]] for row in order_rows), np.int64, len(order_rows)),
            np.fromiter((row[1] for row in order_rows), np.int64, len(order_rows)),
            np.fromiter((_number(*row[2:]) for row in order_rows), np.float64, len(order_rows)),
            np.fromiter((index[row[0]] for row in event_rows), np.int64, len(event_rows)),
            np.fromiter((row[1] for row in event_rows), np.int64, len(event_rows)),
        )

    async def replace_scores(
        self,
        records: Sequence[tuple[Any, ...]],
        build: ScoreBuild | None = None,
        model: tuple[StoredModel, bool] | None = None,
    ) -> None:
        """All the rows (tuples in ``COLUMNS`` order) in place of the old, at once, with
        what the build fixed for ``gateway scores refresh`` and the model it trained
        (and whether it is the active one now): saved with the scores, or neither."""
        async with self._sessions.begin() as session:
            if model is not None:
                await _add_model(session, *model)
            connection = await session.connection()
            await connection.execute(delete(CustomerScore))
            await insert_tuples(connection, _TABLE, COLUMNS, records)
            if build is not None:
                session.add(build)

    def exclusive(self) -> contextlib.AbstractAsyncContextManager[bool]:
        """Whether this caller is the only build or refresh now (across instances on
        Postgres): two writing the same customers' rows would collide on their keys."""
        engine: AsyncEngine = self._sessions.kw["bind"]
        return run_lock(engine, "scores")

    async def last_build(self) -> ScoreBuild | None:
        async with self._sessions() as session:
            return await session.scalar(select(ScoreBuild).order_by(ScoreBuild.id.desc()).limit(1))

    async def model(self, version: str) -> StoredModel | None:
        async with self._sessions() as session:
            row = await session.scalar(select(ScoreModel).where(ScoreModel.version == version))
            if row is None:
                return None
            return StoredModel(row.version, row.horizon_days, row.evaluation, row.estimator)

    async def stamp(self) -> datetime:
        """A moment before which every event is committed (an event's ``changed_at`` is
        its transaction's start): ``gateway.db.locks.committed_before``."""
        engine: AsyncEngine = self._sessions.kw["bind"]
        return await committed_before(engine)

    async def changed(self) -> list[uuid.UUID]:
        """Customers whose events or personalisation consent changed (``changed_at``:
        inserts, updates, merges) after their row was computed, and customers with no row:
        one set-based query that reads both through their ``changed_at`` index from the
        oldest row's time on. (A consent decides whether their behaviour is read.)"""
        oldest = select(func.min(CustomerScore.computed_at)).scalar_subquery()
        touched = (
            select(Event.customer_id)
            .join(CustomerScore, CustomerScore.customer_id == Event.customer_id)
            .where(Event.changed_at > oldest, Event.changed_at > CustomerScore.computed_at)
        )
        consented = (
            select(Consent.customer_id)
            .join(CustomerScore, CustomerScore.customer_id == Consent.customer_id)
            .where(
                Consent.changed_at > oldest,
                Consent.changed_at > CustomerScore.computed_at,
                Consent.purpose == Purpose.PERSONALISATION.value,
            )
        )
        unscored = (
            select(Customer.id)
            .outerjoin(CustomerScore, CustomerScore.customer_id == Customer.id)
            .where(CustomerScore.customer_id.is_(None))
        )
        both = union(touched, consented, unscored).subquery()
        async with self._sessions() as session:
            found = await session.scalars(select(both.c[0]).order_by(both.c[0]))
            return [i for i in found if i is not None]

    async def rescore(self, records: Sequence[tuple[Any, ...]]) -> int:
        """These customers' rows in place of their old ones; a customer erased since
        the read gets none (their row went with them). Returns the rows written."""
        if not records:
            return 0
        ids = [record[0] for record in records]
        async with self._sessions.begin() as session:
            connection = await session.connection()
            # In id order, KEY SHARE on Postgres: an erasure waits for this write rather
            # than slipping under it, and merges locking the same customers queue.
            alive = await lock_customers(connection, ids)
            kept = [record for record in records if record[0] in alive]
            await connection.execute(
                delete(CustomerScore).where(CustomerScore.customer_id.in_(ids))
            )
            await insert_tuples(connection, _TABLE, COLUMNS, kept)
            return len(kept)

    async def active_model(self) -> StoredModel | None:
        async with self._sessions() as session:
            row = await session.scalar(select(ScoreModel).where(ScoreModel.active.is_(True)))
            if row is None:
                return None
            return StoredModel(row.version, row.horizon_days, row.evaluation, row.estimator)

    async def save_model(self, model: StoredModel, *, active: bool) -> None:
        async with self._sessions.begin() as session:
            await _add_model(session, model, active)

    async def scores_for(
        self, customer_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, CustomerScores]:
        """The stored scores of these customers (absent: not scored yet), in one query."""
        if not customer_ids:
            return {}
        async with self._sessions() as session:
            rows = await session.scalars(
                select(CustomerScore).where(CustomerScore.customer_id.in_(customer_ids))
            )
            return {row.customer_id: CustomerScores.of(row) for row in rows}

    async def segments(self) -> list[tuple[str, int]]:
        """Each RFM segment of the last build and how many customers it holds, largest
        first (customers without an order have none)."""
        size = func.count().label("size")
        async with self._sessions() as session:
            rows = await session.execute(
                select(CustomerScore.rfm_segment, size)
                .where(CustomerScore.rfm_segment.is_not(None))
                .group_by(CustomerScore.rfm_segment)
                .order_by(size.desc(), CustomerScore.rfm_segment)
            )
            return [(str(name), int(count)) for name, count in rows]

    async def segment_sample(self, segment: str, size: int) -> list[uuid.UUID]:
        """Up to ``size`` customers of one RFM segment, the same ones each time (by id),
        so a preview can be looked at again."""
        async with self._sessions() as session:
            found = await session.scalars(
                select(CustomerScore.customer_id)
                .where(CustomerScore.rfm_segment == segment)
                .order_by(CustomerScore.customer_id)
                .limit(size)
            )
            return list(found)


async def _add_model(session: AsyncSession, model: StoredModel, active: bool) -> None:
    if active:
        await session.execute(update(ScoreModel).values(active=False))
    session.add(
        ScoreModel(
            version=model.version,
            horizon_days=model.horizon_days,
            evaluation=model.evaluation,
            estimator=model.estimator,
            active=active,
        )
    )
