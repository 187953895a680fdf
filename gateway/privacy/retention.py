"""Retention that runs: customers whose consent was withdrawn long ago are erased, and old
events deleted or anonymised, per the configured rules; a dry run by default.

A customer qualifies when every consent stored for them is withdrawn and the latest of
those statements is older than ``consent_withdrawn_days``: they are forgotten by
``Forgetting``, as an erasure asked for through the API is: the same transaction,
cascades and tombstones (so no sync or import brings them back), then their cached
copies dropped, and the audit log records it under the actor ``retention``.  Events
older than ``events_days`` are deleted, or, with ``anonymise``, kept without their
customer, their properties or the identifier digests that tie them to a person; after
each slice commits, the cached behaviour and stored answers of the customers whose events
it touched are dropped.  Served recommendation lists (impressions) older than
``impressions_days`` are deleted (gateway/experiments/pruning.py).  All
go in slices, each its own transaction, so a large backlog never holds locks for long;
the export sees them as deletions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tqdm import tqdm

from gateway.db.access_models import EventSubject
from gateway.db.locks import run_lock
from gateway.db.models import Consent, Event, utcnow
from gateway.errors import Conflict
from gateway.experiments import pruning
from gateway.observability import metrics
from gateway.privacy.audit import Action, AuditLog
from gateway.privacy.forgetting import Forgetting
from gateway.warehouse_settings import EventRetention

SLICE = 5000
# The ``gateway.db.locks`` name every retention run holds (CLI, API, schedule).
LOCK = "retention"


@dataclass(frozen=True, slots=True)
class RetentionRules:
    consent_withdrawn_days: int | None = None
    events_days: int | None = None
    events_action: EventRetention = EventRetention.DELETE
    impressions_days: int | None = None  # served lists; None (or 0): kept


@dataclass(frozen=True, slots=True)
class RetentionReport:
    dry_run: bool
    customers: int  # erased (or, dry, that would be)
    events: int  # deleted or anonymised (or would be)
    events_action: EventRetention
    tombstones: int
    impressions: int = 0  # served lists deleted (or would be)

    def lines(self) -> list[str]:
        verb = "would " if self.dry_run else ""
        action = "delete" if self.events_action is EventRetention.DELETE else "anonymise"
        done = {"delete": "deleted", "anonymise": "anonymised"}[action]
        return [
            f"customers: {self.customers} {verb + 'erase' if self.dry_run else 'erased'}"
            + ("" if self.dry_run else f" ({self.tombstones} tombstones)"),
            f"events: {self.events} {verb + action if self.dry_run else done}",
            f"impressions: {self.impressions} {verb + 'delete' if self.dry_run else 'deleted'}",
            "dry run: nothing changed (run with --apply to do it)" if self.dry_run else "done",
        ]


class RetentionBusy(Conflict):
    """A retention run is under way (here or on another instance)."""


class Retention:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        forgetting: Forgetting,
        rules: RetentionRules,
        *,
        audit: AuditLog | None = None,
        progress: bool = False,
        actor: str = "retention",
        key_id: str | None = None,
    ) -> None:
        self._sessions = sessions
        self._forgetting = forgetting
        self._rules = rules
        self._audit = audit
        self._progress = progress
        # Whose erasures they are in the audit log: the process, or the admin key that
        # asked for the run through the API.
        self._actor, self._key_id = actor, key_id

    async def withdrawn(self, now: datetime) -> list[uuid.UUID]:
        """The customers the consent rule removes."""
        days = self._rules.consent_withdrawn_days
        if days is None:
            return []
        granted = func.max(case((Consent.granted.is_(True), 1), else_=0))
        query = (
            select(Consent.customer_id)
            .group_by(Consent.customer_id)
            .having(granted == 0, func.max(Consent.recorded_at) < now - timedelta(days=days))
            .order_by(Consent.customer_id)
        )
        async with self._sessions() as session:
            return list(await session.scalars(query))

    def _old_events(self, cutoff: datetime) -> Select[int]:
        query = select(Event.id).where(Event.occurred_at < cutoff)
        if self._rules.events_action is EventRetention.ANONYMISE:
            # Already anonymised ones are not counted again.
            query = query.where(
                Event.customer_id.is_not(None) | Event.id.in_(select(EventSubject.event_id))
            )
        return query

    async def run(self, *, dry_run: bool = True, now: datetime | None = None) -> RetentionReport:
        """One run of the rules, alone across instances: ``RetentionBusy`` at once when
        another holds the lock (the CLI, the API and the schedule all come here)."""
        engine = self._sessions.kw.get("bind")
        assert isinstance(engine, AsyncEngine), "Retention needs sessions bound to an engine"
        async with run_lock(engine, LOCK) as held:
            if not held:
                raise RetentionBusy("a retention run is already under way; try again when it ends")
            return await self._run(dry_run, now or utcnow())

    async def _run(self, dry_run: bool, now: datetime) -> RetentionReport:
        customers = await self.withdrawn(now)
        erased = tombstones = 0
        if not dry_run:
            for customer_id in tqdm(customers, desc="erase", disable=not self._progress):
                gone = await self._forgetting.forget(customer_id)
                if gone is not None:
                    erased += 1
                    tombstones += gone.tombstones
            if self._audit is not None and customers:
                self._audit.record(
                    actor=self._actor,
                    key_id=self._key_id,
                    action=Action.ERASE,
                    operation="retention",
                    customer_ids=customers,
                )
                await self._audit.flush()
        events = 0
        if self._rules.events_days is not None:
            cutoff = now - timedelta(days=self._rules.events_days)
            events = await (self._count(cutoff) if dry_run else self._remove(cutoff))
        impressions = 0
        if self._rules.impressions_days:
            cutoff = now - timedelta(days=self._rules.impressions_days)
            remove = pruning.count_old if dry_run else pruning.remove_old
            impressions = await remove(self._sessions, cutoff)
        report = RetentionReport(
            dry_run,
            len(customers) if dry_run else erased,
            events,
            self._rules.events_action,
            tombstones,
            impressions,
        )
        _record(report)
        return report

    async def _count(self, cutoff: datetime) -> int:
        query = select(func.count()).select_from(self._old_events(cutoff).subquery())
        async with self._sessions() as session:
            return int(await session.scalar(query) or 0)

    async def _remove(self, cutoff: datetime) -> int:
        done = 0
        anonymise = self._rules.events_action is EventRetention.ANONYMISE
        with tqdm(desc="events", unit=" events", disable=not self._progress) as bar:
            while True:
                async with self._sessions.begin() as session:
                    # With whose answers held them: dropped once the slice commits.
                    query = self._old_events(cutoff).add_columns(Event.customer_id)
                    rows = (await session.execute(query.limit(SLICE))).all()
                    if not rows:
                        return done
                    ids = [row[0] for row in rows]
                    owners = {row[1] for row in rows if row[1] is not None}
                    if anonymise:
                        await session.execute(
                            delete(EventSubject).where(EventSubject.event_id.in_(ids))
                        )
                        await session.execute(
                            update(Event)
                            .where(Event.id.in_(ids))
                            .values(customer_id=None, properties={})
                        )
                    else:
                        await session.execute(delete(Event).where(Event.id.in_(ids)))
                await self._forgetting.events_removed(owners)
                done += len(ids)
                bar.update(len(ids))


def _record(report: RetentionReport) -> None:
    dry = "true" if report.dry_run else "false"
    metrics.RETENTION_ROWS.labels("customers", "erase", dry).set(report.customers)
    metrics.RETENTION_ROWS.labels("events", report.events_action.value, dry).set(report.events)
    metrics.RETENTION_ROWS.labels("impressions", "delete", dry).set(report.impressions)
    metrics.RETENTION_FINISHED.set(utcnow().timestamp())
