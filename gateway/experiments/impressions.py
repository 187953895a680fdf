"""Every served recommendation list, recorded without a round trip per request.

Serving hands over a plain tuple (list id, customer, the clock's time, strategy,
experiment and variant, send, product ids as JSON text) and returns: no datetime, no
object per item on the request path. Its values are queued flat, end to end in the
buffer's one list (``RowBuffer.append_values``), so a waiting row is no object of its
own: the tens of thousands a send queues before the lull set off no collection of the
garbage collector (each pauses every request in flight). Queued as rows, they did: a
tuple is counted when made, and ~45,000 rows a 10 s turn of bench/impressions ran 4-5
young collections and an older one, ~22 ms of pauses, against none without recording
(with the items a tuple too, 8-9 and 2-3, ~35 ms; with the customer's UUID, every row
stayed tracked, and full collections took ~8 ms more at 60,000 rows).

The rows are made of them and written in bulk every ``flush_interval_s`` through the
same buffer as the audit log (gateway/row_buffer.py); while lists are served in a burst
a due write waits for the lull after it (``Lull``). Every request served leaves a row,
so the write is the cheapest the database offers: COPY on Postgres, and on SQLite
driver-level inserts of 1,000 rows a statement that turn raw values into the forms
SQLAlchemy stores (a UUID's 32 hex digits, a UTC time as ``YYYY-MM-DD HH:MM:SS.ffffff``,
JSON text) in SQLite's own code. A customer erased (or merged away) between serving and
the write leaves a row the foreign key refuses: the batch is then written with a merged
customer's rows given to the customer they were merged into (as the merge moved their
stored lists) and without an erased customer's, rather than retried for ever.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple, cast

import orjson
from asyncpg.exceptions import IntegrityConstraintViolationError
from sqlalchemy import Select, Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from gateway.db.bulk import (
    insert_selected,
    insert_tuples,
    is_postgres,
    sqlite_utc_text,
    utc_of_ns,
)
from gateway.db.models import MERGES_ONLY, AuditEntry, Customer
from gateway.db.recommendation_models import RecommendationImpression
from gateway.row_buffer import Lull, RowBuffer

logger = logging.getLogger("gateway.impressions")
_IDS_PER_QUERY = 500
# Rows per SQLite statement: each is a trip to the driver's thread and back (~150 us of
# CPU; at 100 rows a statement that was ~1.5 us a row), and holds the GIL while its
# 9,000 values are bound, so a 5 s batch never holds it at once.
_ROWS = 1000
_TABLE = cast(Table, RecommendationImpression.__table__)
# Rows kept while the database is down before the oldest are dropped: past a lull's
# ``write_at_rows`` (~27 s of a saturated endpoint, ~0.5 kB each: ~110 MB).
_MAX_ROWS = 200_000
# Rows a transaction: ~0.3-0.7 s of SQLite's write lock (~15-35 us a row, more as the
# table grows), the size of a 5 s batch of a saturated endpoint.
_ROWS_A_WRITE = 20_000
SURFACES = ("graphql", "api", "render")
_MERGE_HOPS = 5  # merged into one later merged again: followed this far
_CACHED_AT_MOST = timedelta(hours=1)  # slack for a list served after the merge


class Impression(NamedTuple):
    """One served list, in the table's column order; serving hands it over as a plain
    tuple of these fields (the cheapest value to build; queued flat), ``served_at`` as
    ``time.time_ns()`` (an integer: stored to the microsecond by integer arithmetic on
    both databases)."""

    list_id: str
    customer_id: str  # the UUID's 32 hex digits (``UUID.hex``): see the module's comment
    served_at: int
    surface: str
    strategy: str
    experiment: str | None
    variant: str | None
    send_id: str | None
    items: str  # the product ids, in order, as a JSON array's text (``items_json``)


# The fields of an ``Impression``, as a plain tuple.
_Row = tuple[str, str, int, str, str, str | None, str | None, str | None, str]
# What serving queues: the same, but the customer as its UUID's integer (``UUID.int``, an
# attribute, where ``UUID.hex`` formats it: ~0.15 us a list), made the stored hex digits
# by the writer (``_stored_forms``).
Served = tuple[str, int, int, str, str, str | None, str | None, str | None, str]
_COLUMNS = Impression._fields  # the table's columns, in the tuple's order
_WIDTH = len(_COLUMNS)


class ImpressionLog:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        flush_interval_s: float = 1.0,
        *,
        enabled: bool = True,
        lull: Lull | None = None,
    ) -> None:
        self._sessions = sessions
        self.enabled = enabled
        # Flat: a row's values end to end, no object a row (see the module's comment).
        self._buffer: RowBuffer[object] = RowBuffer(
            self._write,
            name="impressions",
            logger=logger,
            interval_s=flush_interval_s,
            max_rows=_MAX_ROWS if lull else 50_000,
            lull=lull,
            write_rows=_ROWS_A_WRITE,
            width=_WIDTH,
        )

        # Serving's way in: ``record`` without the check of ``enabled`` its caller made,
        # one Python call fewer on the hot path.
        self.queue: Callable[[Sequence[object]], None] = self._buffer.append_values

    def record(self, impression: Impression | _Row | Served) -> None:
        """Queue one served list (an ``Impression``, a tuple of its fields, or as
        serving queues it: ``Served``); returns at once."""
        if self.enabled:
            self._buffer.append_values(impression)

    @property
    def rows(self) -> int:
        """Lists queued, not yet written."""
        return self._buffer.rows

    async def flush(self) -> None:
        """Write everything queued so far (results read after this see this process's)."""
        await self._buffer.flush()

    async def aclose(self) -> None:
        await self._buffer.aclose()

    async def _write(self, values: list[object]) -> None:
        _stored_forms(values)
        try:
            await self._insert(values)
        except (IntegrityError, IntegrityConstraintViolationError):
            # A list already stored: a write retried after its commit went through
            # unacknowledged (a connection lost with the reply). Its rows are not
            # written again; left in, the same batch failed every retry, and every list
            # served afterwards waited behind it until the buffer dropped the oldest.
            batch = await self._not_stored(_rows(values))
            # A customer gone since: merged away, their rows go to whom they were merged
            # into (a click on the list is then still attributed); erased, they are not
            # written.
            kept = await self._of_existing(batch)
            if len(kept) < len(batch):
                moved = await self._of_survivors(batch, {row[1] for row in kept})
                kept += moved
                if len(kept) < len(batch):
                    logger.info(
                        "impressions of customers erased meanwhile not written",
                        extra={"dropped": len(batch) - len(kept), "moved": len(moved)},
                    )
            await self._insert(_flat(kept))

    async def _insert(self, values: Sequence[object]) -> None:
        try:
            await self._insert_all(values)
        except UnicodeEncodeError:
            # Text that cannot be stored (a lone surrogate: serving cleans the items and
            # the edge refuses one in a send id; a row queued otherwise), refused before
            # anything was written: the batch without its rows, rather than refused on
            # every retry.
            await self._insert_all(_flat(_encodable_rows(_rows(values))))

    async def _insert_all(self, values: Sequence[object]) -> None:
        if not values:
            return
        async with self._sessions.begin() as session:
            connection = await session.connection()
            if is_postgres(connection):
                records = [_postgres(row) for row in _rows(values)]
                await insert_tuples(connection, _TABLE, _COLUMNS, records)
            else:
                await _sqlite(connection, values)

    async def _not_stored(self, batch: Sequence[_Row]) -> list[_Row]:
        """The rows whose list is not stored yet (the first of a list queued twice)."""
        ids = list({row[0] for row in batch})
        stored: set[str] = set()
        async with self._sessions() as session:
            for start in range(0, len(ids), _IDS_PER_QUERY):
                listed = RecommendationImpression.list_id.in_(ids[start : start + _IDS_PER_QUERY])
                query = select(RecommendationImpression.list_id).where(listed)
                stored.update(await session.scalars(query))
        kept = []
        for row in batch:
            if row[0] not in stored:
                stored.add(row[0])
                kept.append(row)
        if len(kept) < len(batch):
            logger.warning(
                "impressions already stored not written again (a retried write)",
                extra={"dropped": len(batch) - len(kept)},
            )
        return kept

    async def _of_existing(self, batch: Sequence[Impression | _Row]) -> list[Impression | _Row]:
        async with self._sessions() as session:
            found = await _existing(session, {row[1] for row in batch})
        return [row for row in batch if row[1] in found]

    async def _of_survivors(
        self, batch: Sequence[Impression | _Row], stored: set[str]
    ) -> list[Impression | _Row]:
        """The rows of customers merged away since, each given the customer it was
        merged into (through later merges too), when that one is still stored. A merge
        or a fold is audited with the id it removed (gateway/identity/merges.py,
        linkage/folding.py); only merges since the oldest row was served, less an hour
        of slack (a list served just after a merge from a cache not yet told of it), are
        read."""
        gone = {row[1] for row in batch} - stored
        since = utc_of_ns(min(row[2] for row in batch)) - _CACHED_AT_MOST
        into: dict[str, str] = {}
        asked = gone
        async with self._sessions() as session:
            for _ in range(_MERGE_HOPS):
                if not asked:
                    break
                names = [str(uuid.UUID(hex)) for hex in asked]  # audited with hyphens
                found: dict[str, str] = {}
                for start in range(0, len(names), _IDS_PER_QUERY):
                    query = merges_since(since, names[start : start + _IDS_PER_QUERY])
                    for away, survivor in await session.execute(query):
                        if survivor is not None:
                            found[uuid.UUID(away).hex] = survivor.hex
                into.update(found)
                # Only survivors gone too are asked after: most are stored.
                onwards = set(found.values()) - set(into)
                asked = onwards - await _existing(session, onwards)
            final = {hex: _last(hex, into) for hex in gone if hex in into}
            alive = await _existing(session, set(final.values()))
        return [
            (row[0], final[row[1]], *row[2:])
            for row in batch
            if row[1] in final and final[row[1]] in alive
        ]


def merges_since(since: datetime, removed: Sequence[str]) -> Select[str, uuid.UUID | None]:
    """The merges and folds audited since ``since`` that removed one of ``removed`` (ids
    as audited, with hyphens): (the id removed, the customer it went into). Read through
    their own partial index (``ix_audit_log_merges``): the audit log holds a row for
    every read."""
    merged = AuditEntry.details["merged"].as_string()
    return select(merged, AuditEntry.customer_id).where(
        MERGES_ONLY, AuditEntry.occurred_at >= since, merged.in_(removed)
    )


def _postgres(row: Impression | _Row) -> tuple[object, ...]:
    # COPY takes the values as they are (a uuid column its hex digits too, a json column
    # its text), but a time as a datetime.
    list_id, customer, moment, *rest = row
    return (list_id, customer, utc_of_ns(moment), *rest)


def _rows(values: Sequence[object]) -> list[_Row]:
    """Rows queued flat, as rows again (for the rare paths that look at them)."""
    return [cast(_Row, tuple(values[at : at + _WIDTH])) for at in range(0, len(values), _WIDTH)]


def _stored_forms(values: list[object]) -> None:
    """Queued rows' customers as the stored hex digits, in place: serving queues the
    UUID's integer (``Served``), other callers the digits. Idempotent (a batch retried
    after a failed write is given again as converted)."""
    values[1::_WIDTH] = [
        customer if isinstance(customer, str) else f"{customer:032x}"
        for customer in values[1::_WIDTH]
    ]


def _flat(rows: Sequence[Impression | _Row]) -> list[object]:
    return list(itertools.chain.from_iterable(rows))


async def _sqlite(connection: AsyncConnection, values: Sequence[object]) -> None:
    # Statements of _ROWS rows of values bound as queued, the time turned into the stored
    # text by SQLite: the driver's binding and SQLite's work in the driver's thread (see
    # ``insert_selected``).
    await insert_selected(connection, _TABLE, _COLUMNS, _SELECTED, values, width=_WIDTH, most=_ROWS)


def items_json(product_ids: Iterable[str]) -> str:
    """A served list's product ids as the impression's ``items``: a JSON array's text
    (compact: text, not orjson's bytes, each of which keeps orjson's whole first buffer
    of ~1 kB; a send queues tens of thousands before the lull). An id JSON cannot hold
    (a lone surrogate, as an upstream's JSON may spell one) is kept with "?" in its
    place: the list is still recorded, and its row not refused by the database."""
    ids = tuple(product_ids)
    try:
        return orjson.dumps(ids).decode()
    except orjson.JSONEncodeError:
        cleaned = [i.encode("utf-8", "replace").decode() if isinstance(i, str) else i for i in ids]
        return orjson.dumps(cleaned).decode()


def _encodable_rows(rows: Sequence[Impression | _Row]) -> list[Impression | _Row]:
    kept = [row for row in rows if _encodable(row)]
    logger.error(
        "impressions whose text cannot be stored not written",
        extra={"dropped": len(rows) - len(kept)},
    )
    return kept


def _encodable(row: Impression | _Row) -> bool:
    try:
        orjson.dumps(row, default=tuple)
    except orjson.JSONEncodeError:
        return False
    return True


# What each column stores on SQLite, as SQLAlchemy stores it, from the queued values
# (``Impression``'s fields, bound in order as column1..column9): a UUID as its 32 hex
# digits (what the row holds), a UTC time as ``YYYY-MM-DD HH:MM:SS.ffffff`` (to the
# microsecond, truncated as _postgres truncates), JSON as its text.
_SELECTED = (
    "column1",
    "column2",
    sqlite_utc_text("column3"),
    *(f"column{n}" for n in range(4, 10)),
)


async def _existing(session: AsyncSession, customers: set[str]) -> set[str]:
    """Which of ``customers`` (hex digits) are stored."""
    ids = [uuid.UUID(hex) for hex in customers]
    found: set[str] = set()
    for start in range(0, len(ids), _IDS_PER_QUERY):
        query = select(Customer.id).where(Customer.id.in_(ids[start : start + _IDS_PER_QUERY]))
        found.update(customer.hex for customer in await session.scalars(query))
    return found


def _last(customer: str, into: dict[str, str]) -> str:
    """Where ``customer``'s merges end (``into`` maps each merged-away id onwards)."""
    for _ in range(_MERGE_HOPS + 1):
        if customer not in into:
            break
        customer = into[customer]
    return customer
