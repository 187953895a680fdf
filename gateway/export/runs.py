"""Export and retention runs inside a serving gateway: started by an admin's API call
or by the schedule (GATEWAY_EXPORT_INTERVAL_S, GATEWAY_RETENTION_IN_SERVE); and scores
runs, by the schedule only (GATEWAY_SCORES_REFRESH_INTERVAL_S, _BUILD_INTERVAL_S).

One run of each kind at a time, across instances: an export holds its target's lock
(``ExportStore.exclusive``), retention the ``retention`` lock (``gateway.db.locks``).
A second caller is answered ``Conflict`` at once rather than queued behind the first or
run beside it. A run is its own task: a client that hangs up does not cancel it half
way (an export cancelled anyway, at shutdown, is resumed by the next run). A scheduled
run that fails is logged and tried again at the next interval; it never stops serving;
one that takes longer than GATEWAY_SCHEDULED_RUN_TIMEOUT_S is stopped (an export then
resumes where it stopped), so a hung upload or database cannot hold the lock forever.
A scores refresh and a build share one lock (``scores``) with ``gateway scores build``
and ``refresh`` on any instance: a turn that finds it held is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_sessionmaker
from gateway.errors import Conflict, GatewayError
from gateway.export.pseudonymise import Pseudonymiser
from gateway.export.service import ExportBusy, Exporter, ExportError, ExportReport
from gateway.observability import metrics
from gateway.privacy.audit import Action, AuditLog
from gateway.privacy.forgetting import Forgetting
from gateway.privacy.retention import (
    Retention,
    RetentionBusy,
    RetentionReport,
    RetentionRules,
)
from gateway.scores.build import ScoresBusy
from gateway.scores.features import LeakageError
from gateway.scores.model_seal import PublicModelKey, UntrustedModel, deployment_model_key
from gateway.scores.refresh import NoBuildError
from gateway.scores.scheduled import run_scores
from gateway.settings import Settings

logger = logging.getLogger("gateway.runs")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who started a run: an API key (its name and id), or the schedule."""

    name: str
    key_id: str | None = None


SCHEDULE = Caller("schedule")


class RunBusy(Conflict):
    """A run of the same kind is under way (here or on another instance)."""


class ScoresRunFailed(GatewayError):
    """A scheduled scores run refused to go on (no build yet, an untrusted model...)."""


class Runs:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        forgetting: Forgetting,
        audit: AuditLog,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._forgetting = forgetting
        self._audit = audit
        self._tasks: set[asyncio.Task[object]] = set()
        self._scoring = asyncio.Lock()

    @property
    def rules(self) -> RetentionRules:
        s = self._settings
        return RetentionRules(
            s.retention_consent_withdrawn_days,
            s.retention_events_days,
            s.retention_events_action,
            s.retention_impressions_days,
        )

    async def export(
        self,
        caller: Caller,
        *,
        raw: bool = False,
        full: bool = False,
        operation: str,
        timeout_s: float | None = None,
    ) -> ExportReport:
        """One export into GATEWAY_EXPORT_DIR (pseudonymised unless ``raw``); Conflict
        when another is under way or the target holds the other kind of export;
        ``TimeoutError`` when it took longer than ``timeout_s`` (it stopped)."""
        field = operation.rpartition(":")[2]
        self._audited(caller, Action.EXPORT, operation)
        try:
            pseudonymiser = None if raw else Pseudonymiser.from_settings(self._settings)
            exporter = Exporter(self._engine, self._settings.export_dir, pseudonymiser)
            return await self._detached(exporter.run(full=full), timeout_s)
        except ExportBusy as exc:
            raise RunBusy(str(exc), field=field) from None
        except ExportError as exc:
            # The target holds the other kind of export, or no filesystem opens it.
            raise Conflict(str(exc), field=field) from None

    async def retention(
        self, caller: Caller, *, apply: bool, operation: str, timeout_s: float | None = None
    ) -> RetentionReport:
        """One run of the retention rules (a dry run unless ``apply``); erasures are
        audited under ``caller``. Conflict when a run is under way on any instance;
        ``TimeoutError`` when it took longer than ``timeout_s`` (it stopped)."""
        rules = self.rules
        self._audited(caller, Action.ERASE if apply else Action.READ, operation)
        retention = Retention(
            create_sessionmaker(self._engine),
            self._forgetting,
            rules,
            audit=self._audit,
            actor=caller.name,
            key_id=caller.key_id,
        )

        async def alone() -> RetentionReport:
            try:
                return await retention.run(dry_run=not apply)
            except RetentionBusy as exc:
                raise RunBusy(str(exc), field=operation.rpartition(":")[2]) from None

        return await self._detached(alone(), timeout_s)

    def _audited(self, caller: Caller, action: Action, operation: str) -> None:
        self._audit.record_run(
            actor=caller.name, key_id=caller.key_id, action=action, operation=operation
        )

    async def _detached(self, work: Awaitable[T], timeout_s: float | None = None) -> T:
        # The timeout is the run's own: it stops the run, not only the wait for it.
        task: asyncio.Task[tuple[T | None, Exception | None]] = asyncio.ensure_future(
            asyncio.wait_for(_settled(work), timeout_s)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            value, failure = await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_left_behind)  # its end logged, not lost
            raise
        if failure is not None:
            raise failure
        return value  # type: ignore[return-value]  # None only beside a failure

    def schedule(self) -> None:
        """Start the configured schedules (none by default)."""
        s = self._settings
        if s.retention_in_serve and s.retention_interval_s is not None:
            if s.retention_consent_withdrawn_days is None and s.retention_events_days is None:
                logger.warning("retention scheduled, but no retention rules are set")
            else:
                self._every(s.retention_interval_s, "retention", self._scheduled_retention)
        if s.export_interval_s is not None:
            self._every(s.export_interval_s, "export", self._scheduled_export)
        if s.scores_refresh_interval_s is None and s.scores_build_interval_s is None:
            return
        try:
            key = deployment_model_key(s, insecure_demo=s.insecure_demo)
        except PublicModelKey as exc:
            logger.error("scores runs scheduled, but not started: %s", exc)
            return
        if s.scores_build_interval_s is not None:
            job = partial(self._scheduled_scores, key, retrain=True)
            self._every(s.scores_build_interval_s, "scores-build", job)
        if s.scores_refresh_interval_s is not None:
            job = partial(self._scheduled_scores, key, retrain=False)
            self._every(s.scores_refresh_interval_s, "scores-refresh", job)

    async def _scheduled_scores(self, key: bytes, *, retrain: bool) -> None:
        name = "scores-build" if retrain else "scores-refresh"
        if self._scoring.locked():
            # The other scores schedule's run: on SQLite only this process guards the lock.
            raise RunBusy("a scores run is under way", field=name)
        async with self._scoring:
            try:
                line = await self._detached(
                    run_scores(self._settings, key, retrain=retrain),
                    self._settings.scheduled_run_timeout_s,
                )
            except ScoresBusy as exc:
                raise RunBusy(str(exc), field=name) from None
            except (NoBuildError, UntrustedModel, LeakageError) as exc:
                raise ScoresRunFailed(str(exc), field=name) from None
        logger.info("scheduled %s done: %s", name, line)

    async def _scheduled_retention(self) -> None:
        report = await self.retention(
            SCHEDULE,
            apply=True,
            operation="schedule:retention",
            timeout_s=self._settings.scheduled_run_timeout_s,
        )
        logger.info(
            "scheduled retention done",
            extra={"customers": report.customers, "events": report.events},
        )

    async def _scheduled_export(self) -> None:
        report = await self.export(
            SCHEDULE, operation="schedule:export", timeout_s=self._settings.scheduled_run_timeout_s
        )
        logger.info(
            "scheduled export done",
            extra={"run_id": report.run_id, "rows": report.rows, "seconds": report.seconds},
        )

    def _every(self, interval: float, name: str, job: Callable[[], Awaitable[None]]) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await job()
                except RunBusy:
                    # Another instance (or an API call) is running it: its turn, not ours.
                    logger.info("scheduled %s skipped: a run is under way", name)
                except TimeoutError:
                    metrics.EXPORT_FAILURES.labels(name).inc()  # the alert sees it too
                    logger.error(
                        "scheduled %s stopped after GATEWAY_SCHEDULED_RUN_TIMEOUT_S; "
                        "it goes on at the next interval",
                        name,
                    )
                except GatewayError as exc:
                    # Foreseen (a bad target, a database outage): one line, no traceback.
                    metrics.EXPORT_FAILURES.labels(name).inc()
                    logger.error("scheduled %s failed (%s); trying again next interval", name, exc)
                except Exception:
                    metrics.EXPORT_FAILURES.labels(name).inc()
                    logger.exception("scheduled %s failed; trying again next interval", name)

        task = asyncio.get_running_loop().create_task(loop(), name=f"scheduled-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop the schedules and any run under way (an export resumes next time)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _settled(work: Awaitable[T]) -> tuple[T | None, Exception | None]:
    """The run's value or its failure, as a value: a run cancelled as it failed (its
    caller stopping, as serve's schedule does at shutdown) ended inside ``wait_for``'s
    own task with an exception nobody retrieved, logged by asyncio as an error."""
    try:
        return await work, None
    except Exception as exc:  # noqa: BLE001  # handed to the caller, raised there
        return None, exc


def _left_behind(task: asyncio.Task[tuple[object, Exception | None]]) -> None:
    """How a run ended after its caller stopped waiting for it."""
    if task.cancelled():
        return
    if (stopped := task.exception()) is not None:  # its timeout
        logger.warning("a run ended after its caller left: %s", stopped)
        return
    failure = task.result()[1]
    if isinstance(failure, RunBusy):
        logger.info("a run ended after its caller left: %s", failure)
    elif failure is not None:
        logger.error("a run failed after its caller left", exc_info=failure)
