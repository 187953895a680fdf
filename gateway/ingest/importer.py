"""Bulk import of customer records from one source: CSV or JSON Lines, streamed.

Memory stays constant: rows are read lazily and linked in batches, each batch in one
transaction (a crash leaves whole batches, never half a profile; a deadlock runs the
batch again), and a rerun after a crash stores no observation twice.  A row that cannot
be read or validated is reported with its line number and skipped, never dropped
silently.  Given ``Tombstones``, records of erased customers are counted and skipped
(one lookup per batch), as sync and webhooks do.  The CLI wraps ``import_file``.
"""

from __future__ import annotations

import asyncio
import csv
import gc
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.retries import DEFAULT_RETRY, RetryPolicy
from gateway.identity.config import DEFAULT_CONFIG, IdentityConfig
from gateway.identity.linkage.linker import Decision, tally
from gateway.identity.linkage.resolution import Resolver
from gateway.identity.records import PreparedRecord, RecordError, prepare
from gateway.identity.source_ids import DEFAULT_SOURCE_IDS, SourceIds
from gateway.privacy.suppressions import Suppressions
from gateway.privacy.tombstones import Tombstones

log = logging.getLogger(__name__)
Format = Literal["csv", "jsonl"]
DEFAULT_BATCH_SIZE = 5000
_FULL_COLLECTION_EVERY = 20  # batches


@dataclass(frozen=True, slots=True)
class RejectedRow:
    line: int
    reason: str  # names the field, never the value: these are PII


@dataclass(slots=True)
class ImportSummary:
    read: int = 0
    created: int = 0  # new customers
    linked: int = 0  # joined an existing customer (rule or score)
    updated: int = 0  # the same source identity seen again
    review: int = 0  # possible matches left for a person to judge
    erased: int = 0  # records of forgotten customers, skipped
    rejected: list[RejectedRow] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def records_per_second(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0


Progress = Callable[[ImportSummary], None]
# Run after each batch commits, with its decisions: the CLI's drops the cached copies of
# the customers it touched (gateway/ingest/committed.py).
AfterCommit = Callable[[Sequence[Decision]], Awaitable[None]]


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Keep the automatic cyclic garbage collector out of an import.

    A batch allocates a few hundred thousand objects that live until it commits (records,
    keys, candidates, rows to COPY); the collector traverses them again and again and
    finds next to nothing (reference counting frees them): a fifth of the import's time
    on FEBRL 4.  The importer collects explicitly after each batch instead, so cyclic
    garbage cannot pile up over a long file; the previous setting comes back at the end.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _csv_rows(lines: Iterable[str]) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    reader = csv.DictReader(lines, skipinitialspace=True)
    for row in reader:
        # line_num is where the row ended; a quoted field may span lines.
        if None in row or any(value is None for value in row.values()):
            yield reader.line_num, "wrong number of columns"
        else:
            yield reader.line_num, {(k or "").strip(): v for k, v in row.items()}


def _jsonl_rows(lines: Iterable[str]) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            yield number, "not valid JSON"
            continue
        yield number, value if isinstance(value, dict) else "not a JSON object"


def read_rows(lines: Iterable[str], fmt: Format) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    """(line number, row) pairs; the row is a reason string when it could not be parsed."""
    return _csv_rows(lines) if fmt == "csv" else _jsonl_rows(lines)


class Importer:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        source: str,
        *,
        config: IdentityConfig = DEFAULT_CONFIG,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Progress | None = None,
        tombstones: Tombstones | None = None,
        source_ids: SourceIds = DEFAULT_SOURCE_IDS,
        observed_at: datetime | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self._after_commit = after_commit
        self._tombstones = tombstones
        self._source_ids = source_ids
        self._observed_at = observed_at
        suppressions = Suppressions(tombstones) if tombstones else None
        self._resolver = Resolver(sessions, config, retry=retry, suppressions=suppressions)
        self._config = config
        self._source = source
        self._batch_size = batch_size
        self._progress = progress
        self._batches = 0

    async def run(self, rows: Iterable[tuple[int, Mapping[str, Any] | str]]) -> ImportSummary:
        summary = ImportSummary()
        started = time.perf_counter()
        with _collector_paused():
            return await self._run(summary, started, rows)

    async def _run(
        self,
        summary: ImportSummary,
        started: float,
        rows: Iterable[tuple[int, Mapping[str, Any] | str]],
    ) -> ImportSummary:
        source = iter(rows)
        # Reading and validating the next batch runs in a thread while this one is linked:
        # the thread gets the interpreter whenever the event loop waits on the database.
        pending = asyncio.create_task(asyncio.to_thread(self._take, source))
        while True:
            batch, digests, rejected, read = await pending
            summary.read += read
            summary.rejected += rejected
            if not batch:
                break
            pending = asyncio.create_task(asyncio.to_thread(self._take, source))
            try:
                await self._flush(batch, digests, summary, started)
            except BaseException:
                await asyncio.gather(pending, return_exceptions=True)
                raise
        summary.seconds = time.perf_counter() - started
        if self._progress is not None:
            self._progress(summary)  # the final count, rejected rows after the last batch too
        log.info(
            "import finished",
            # "created" is a LogRecord attribute: an extra of that name raised KeyError
            # whenever INFO was logged (the end of every `gateway import`, the demo).
            extra={
                "source": self._source,
                "records_read": summary.read,
                "customers_created": summary.created,
                "identities_linked": summary.linked,
                "left_for_review": summary.review,
                "records_erased": summary.erased,
                "records_rejected": len(summary.rejected),
            },
        )
        return summary

    def _take(
        self,
        rows: Iterator[tuple[int, Mapping[str, Any] | str]],
    ) -> tuple[list[PreparedRecord], list[set[str]], list[RejectedRow], int]:
        """Up to one batch of valid records, their tombstone digests (none without
        tombstones), the rows rejected on the way, and rows read."""
        batch: list[PreparedRecord] = []
        rejected: list[RejectedRow] = []
        read = 0
        for line, row in rows:
            read += 1
            if isinstance(row, str):
                rejected.append(RejectedRow(line, row))
                continue
            try:
                batch.append(
                    prepare(row, self._source, self._config, self._source_ids, self._observed_at)
                )
            except RecordError as exc:
                rejected.append(RejectedRow(line, str(exc)))
                continue
            if len(batch) >= self._batch_size:
                break
        # Hashed here, in the reading thread, beside the rest of the per-record work.
        tombstones = self._tombstones
        digests = [tombstones.of_record(record) for record in batch] if tombstones else []
        return batch, digests, rejected, read

    async def _flush(
        self,
        batch: list[PreparedRecord],
        digests: list[set[str]],
        summary: ImportSummary,
        started: float,
    ) -> None:
        # Tombstones are checked under the batch's key locks: a customer erased after the
        # batch was read is still not brought back.
        screen = partial(self._tombstones.unblocked, digests=digests) if self._tombstones else None
        screened = await self._resolver.link_screened(batch, screen)
        summary.erased += screened.dropped
        decisions = screened.decisions
        if self._after_commit is not None and decisions:
            await self._after_commit(decisions)
        self._batches += 1
        # The collector is paused for the run (``_collector_paused``): collect what this
        # batch left in the young generations, and everything now and then.
        gc.collect(2 if self._batches % _FULL_COLLECTION_EVERY == 0 else 1)
        tally(decisions, summary)
        summary.seconds = time.perf_counter() - started
        if self._progress is not None:
            self._progress(summary)


def detect_format(path: Path) -> Format:
    return "jsonl" if path.suffix.lower() in {".jsonl", ".ndjson", ".json"} else "csv"


async def import_file(
    sessions: async_sessionmaker[AsyncSession],
    path: Path,
    source: str,
    *,
    fmt: Format | None = None,
    config: IdentityConfig = DEFAULT_CONFIG,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    tombstones: Tombstones | None = None,
    source_ids: SourceIds = DEFAULT_SOURCE_IDS,
    retry: RetryPolicy = DEFAULT_RETRY,
    after_commit: AfterCommit | None = None,
) -> ImportSummary:
    """Import one file of records from ``source``; returns what happened to each row.
    With ``tombstones``, records of erased customers are skipped and counted; an id
    ``source_ids`` says the source cannot have rejects its row.

    A row without ``observed_at`` was observed when the file was last written: the same
    file imported again (after a crash, say) is the same observations, stored once.
    ``after_commit`` runs after each batch commits, with its decisions."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        importer = Importer(
            sessions,
            source,
            config=config,
            batch_size=batch_size,
            progress=progress,
            tombstones=tombstones,
            source_ids=source_ids,
            observed_at=datetime.fromtimestamp(os.fstat(handle.fileno()).st_mtime, UTC),
            retry=retry,
            after_commit=after_commit,
        )
        return await importer.run(read_rows(handle, fmt or detect_format(path)))
