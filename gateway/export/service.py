"""``Exporter.run``: one export run, incremental from each table's cursor, resumable.

Every step that touches files (Parquet writes, uploads, the target's JSON) runs in a
worker thread (``threads.off_loop``): inside ``gateway serve`` the event loop keeps
answering requests while a run writes.

A run fixes one window end for every table (``ExportStore.window_end``) and records its
plan in the target before writing anything.  Each table is then written (files renamed
into place when complete) and recorded as finished in the target; when all are, the
cursors move in the database (one transaction), and the manifest comes last.  A run
that dies is resumed
by the next one from its plan: tables already finished are kept, the others' leftover
files are removed and they are written again over the same window, so the outcome is
the one an uninterrupted run would have had.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
from sqlalchemy.ext.asyncio import AsyncEngine
from tqdm import tqdm

from gateway.export.deletions import with_unexported
from gateway.export.manifest import RUNS, Folder, Plan, TableResult
from gateway.export.pseudonymise import Pseudonymiser
from gateway.export.store import EPOCH, FAST_FROM_ROWS, ExportStore, Survey
from gateway.export.tables import TABLES, TableSpec
from gateway.export.threads import off_loop
from gateway.export.writer import TableWriter, filesystem, remove_run_files
from gateway.observability import metrics

LANES = 2


class ExportError(Exception):
    """The export cannot run as asked; ``str()`` says why in one line."""


class ExportBusy(ExportError):
    """Another export into the same target is under way."""


@dataclass(frozen=True, slots=True)
class ExportReport:
    run_id: str
    resumed: bool
    pseudonymised: bool
    tables: tuple[TableResult, ...]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    def lines(self) -> list[str]:
        out = []
        for t in self.tables:
            data = t.as_json()
            out.append(
                f"{t.table}: {data['upserts']} upserts, {data['deletes']} deletes in "
                f"{len(t.files)} files ({t.cursor_from} .. {t.cursor_to})"
            )
        rate = self.rows / self.seconds if self.seconds else 0.0
        out.append(
            f"run {self.run_id}{' (resumed)' if self.resumed else ''}: {self.rows} rows in "
            f"{self.seconds:.2f} s ({rate:,.0f} rows/s), "
            f"{'pseudonymised' if self.pseudonymised else 'RAW (not pseudonymised)'}"
        )
        return out


class Exporter:
    def __init__(
        self,
        engine: AsyncEngine,
        target: str,
        pseudonymiser: Pseudonymiser | None,
        *,
        progress: bool = False,
        checkpoint: Callable[[str], None] | None = None,
        fast_from: int | None = FAST_FROM_ROWS,
    ) -> None:
        self._store = ExportStore(engine, fast_from=fast_from)
        self._target = target
        try:
            self._fs, self._root = filesystem(target)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
        # How the cursors name a target: a folder by its absolute path, a URL as given.
        self._key = self._root if isinstance(self._fs, pafs.LocalFileSystem) else target
        self._folder = Folder(self._fs, self._root)
        self._pseudonymiser = pseudonymiser
        self._progress = progress
        # Called after each table is finished (tests inject a failure here).
        self._checkpoint = checkpoint or (lambda _stage: None)

    @property
    def pseudonymised(self) -> bool:
        return self._pseudonymiser is not None

    async def run(self, *, full: bool = False) -> ExportReport:
        async with self._store.exclusive(self._key) as alone:
            if not alone:
                raise ExportBusy(f"another export into {self._target} is running")
            try:
                return await self._run(full)
            finally:
                await off_loop(self._store.close)

    async def _run(self, full: bool) -> ExportReport:
        started = time.perf_counter()
        # What a new plan needs is read beside the target's pending plan, not after it:
        # each step waits its turn for a core on a busy machine.
        plan, (latest, end, cursors) = await asyncio.gather(
            off_loop(self._folder.pending),
            asyncio.gather(
                off_loop(self._folder.latest),
                self._store.window_end(),
                self._store.cursors(self._key),
            ),
        )
        if plan is not None and full:
            await off_loop(partial(self._discard, plan))
            plan = None
        resumed = plan is not None
        if plan is None:
            plan, survey = await self._plan(full, latest, end, cursors)
        elif plan.pseudonymised != self.pseudonymised:
            raise ExportError(
                f"run {plan.run_id} in {self._target} is unfinished and was "
                f"{'pseudonymised' if plan.pseudonymised else 'raw'}: resume it the same way"
            )
        else:
            # Which windows are large, and what each deleted, for every table at once
            # (none for a new target: it has none of the rows a deletion would remove).
            survey = await self._store.survey(_windows(plan), deletions=not plan.fresh)
        # Every table at once, but two large windows at a time (the events, the biggest,
        # first): Postgres sends one while this process writes another, and no more of
        # them compete for two cores and memory.  Small windows (an incremental run's)
        # take no lane: their round trips overlap.  Results keep the tables' order.
        lanes = asyncio.Semaphore(LANES)
        done: dict[str, TableResult] = {}

        async def export(spec: TableSpec) -> None:
            done[spec.name] = await self._finished_or_export(spec, plan, lanes, resumed, survey)

        order = sorted(TABLES, key=lambda spec: spec.name != "events")
        try:
            async with asyncio.TaskGroup() as group:
                for spec in order:
                    group.create_task(export(spec))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        results = [done[spec.name] for spec in TABLES]
        # Every table's files are in place (and recorded in the target): the cursors move.
        # A run that dies before its manifest is resumed, and moves them again.
        ends = {name: hi for name, (_lo, hi) in _windows(plan).items()}
        await self._store.advance(self._key, ends, plan.run_id)
        await off_loop(partial(self._folder.finish, plan, results, datetime.now(UTC)))
        report = ExportReport(
            plan.run_id, resumed, plan.pseudonymised, tuple(results), time.perf_counter() - started
        )
        _record(report)
        return report

    async def _finished_or_export(
        self,
        spec: TableSpec,
        plan: Plan,
        lanes: asyncio.Semaphore,
        resumed: bool,
        survey: Survey,
    ) -> TableResult:
        if resumed:
            # What a dead attempt left: a table it finished is kept (its half-written
            # files go), the others are written again from the start.  Only a resumed
            # run lists the table's files (all of them, of every run).
            finished = await off_loop(partial(self._folder.finished_table, plan.run_id, spec.name))
            await off_loop(
                partial(
                    remove_run_files,
                    self._fs,
                    self._root,
                    spec.name,
                    plan.run_id,
                    partial_only=finished is not None,
                )
            )
            if finished is not None:
                return finished
        large = survey.large[spec.name]
        async with lanes if large else contextlib.nullcontext():
            result = await self._write(spec, plan, large, survey.deleted.get(spec.name))
        await off_loop(partial(self._folder.finish_table, plan.run_id, result))
        self._checkpoint(f"table:{spec.name}")
        return result

    async def _plan(
        self,
        full: bool,
        latest: dict[str, Any] | None,
        end: datetime,
        cursors: dict[str, datetime],
    ) -> tuple[Plan, Survey]:
        """A new run's plan, recorded in the target, and its survey (``ExportStore``)."""
        if latest is not None and bool(latest["pseudonymised"]) != self.pseudonymised:
            was = "pseudonymised" if latest["pseudonymised"] else "raw"
            raise ExportError(
                f"{self._target} holds {was} exports; export "
                f"{'raw' if was == 'pseudonymised' else 'pseudonymised'} data to another folder"
            )
        if full or latest is None:
            # A target without any finished run (new, or emptied by hand) gets everything.
            await self._store.reset(self._key)
            cursors = {}
        now = datetime.now(UTC)
        plan = Plan(
            run_id=now.strftime("%Y%m%dT%H%M%S%fZ"),
            pseudonymised=self.pseudonymised,
            started_at=now.isoformat(),
            windows={
                spec.name: (cursors.get(spec.name, EPOCH).isoformat(), end.isoformat())
                for spec in TABLES
            },
            fresh=latest is None,
        )
        # The plan is in the target before any of its files; the survey only reads.
        survey = self._store.survey(_windows(plan), deletions=not plan.fresh)
        surveyed, _ = await asyncio.gather(survey, off_loop(partial(self._folder.start, plan)))
        return plan, surveyed

    def _discard(self, plan: Plan) -> None:
        for spec in TABLES:
            remove_run_files(self._fs, self._root, spec.name, plan.run_id)
        self._fs.delete_dir(f"{self._root}/{RUNS}/{plan.run_id}")

    async def _write(
        self, spec: TableSpec, plan: Plan, large: bool, deleted: pa.Table | None
    ) -> TableResult:
        """The table's changed rows, then its deletions (``None``: a new target's run,
        which looks for none)."""
        lo_text, hi_text = plan.windows[spec.name]
        lo, hi = datetime.fromisoformat(lo_text), datetime.fromisoformat(hi_text)
        schema = spec.schema(self.pseudonymised)
        writer = TableWriter(self._fs, self._root, spec.name, plan.run_id, schema)
        with tqdm(
            desc=spec.name, unit=" rows", unit_scale=True, disable=not self._progress, leave=True
        ) as bar:

            def consume(batch: pa.RecordBatch) -> None:
                if self._pseudonymiser is not None:
                    batch = self._pseudonymiser.batch(spec.name, batch)
                writer.write(_stamped(pa.Table.from_batches([batch]), "upsert", plan.run_id))
                bar.update(batch.num_rows)

            # A full run too: its target may hold files of earlier runs with rows deleted
            # since, and once this run's cursor passes them, ``prune`` forgets them.
            unexported: list[pa.Table] | None = None if deleted is None else []
            await self._store.changed(spec, lo, hi, consume, large=large, unexported=unexported)
            if deleted is not None and unexported:
                deleted = with_unexported(deleted, unexported)
            if deleted is not None and deleted.num_rows:
                columns = {
                    f.name: deleted.column(f.name)
                    if f.name in deleted.column_names
                    else pa.nulls(deleted.num_rows, f.type)
                    for f in schema
                    if not f.name.startswith("_")
                }
                await off_loop(
                    partial(writer.write, _stamped(pa.table(columns), "delete", plan.run_id))
                )
                bar.update(deleted.num_rows)
            # Closing writes the files' footers and moves them into place: an upload
            # to object storage.
            files = await off_loop(writer.close)
        return TableResult(spec.name, lo_text, hi_text, files)


def _windows(plan: Plan) -> dict[str, tuple[datetime, datetime]]:
    return {
        name: (datetime.fromisoformat(lo), datetime.fromisoformat(hi))
        for name, (lo, hi) in plan.windows.items()
    }


def _stamped(table: pa.Table, op: str, run_id: str) -> pa.Table:
    rows = table.num_rows
    table = table.append_column("_op", pa.repeat(pa.scalar(op, pa.string()), rows))
    return table.append_column("_run", pa.repeat(pa.scalar(run_id, pa.string()), rows))


def _record(report: ExportReport) -> None:
    metrics.EXPORT_ROWS.clear()
    for result in report.tables:
        data = result.as_json()
        metrics.EXPORT_ROWS.labels(result.table, "upsert").set(data["upserts"])
        metrics.EXPORT_ROWS.labels(result.table, "delete").set(data["deletes"])
    metrics.EXPORT_SECONDS.set(report.seconds)
    metrics.EXPORT_FINISHED.set(time.time())
