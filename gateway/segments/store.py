"""Saved segments and their members, asked of the database.

Members are read a page at a time in customer-id order (keyset: ``id > cursor``,
``LIMIT first + 1``), never by offset and never by loading everyone: a page is one
indexed query, and a walk through a segment sees each customer that stays a member
exactly once, however many customers join, leave or change meanwhile (a customer that
joins or leaves during the walk is seen once or not at all). An audience leaves out by
default whoever may not be mailed (``fields.mailable``) unless the segment includes
the suppressed.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Customer, utcnow
from gateway.db.score_models import CustomerScore
from gateway.db.score_models import Segment as SegmentRow
from gateway.errors import InvalidInput
from gateway.segments.definition import Definition, parse
from gateway.segments.fields import EVERYONE, FLOOR, mailable

MAX_NAME = 100
# Letters (any script), digits and a few separators: names end up in URLs and logs.
_NAME = re.compile(r"[\w][\w .:/-]*", re.UNICODE)


@dataclass(frozen=True)
class SavedSegment:
    name: str
    definition: Definition
    include_suppressed: bool
    created_at: datetime
    updated_at: datetime

    def members(self) -> ColumnElement[bool]:
        """The clause that makes a customer a member (filter and suppression)."""
        clause = self.definition.clause()
        return clause if self.include_suppressed else and_(clause, mailable())


@dataclass(frozen=True)
class Page:
    ids: list[uuid.UUID]
    end_cursor: str | None
    has_next_page: bool


def cursor_of(customer_id: uuid.UUID) -> str:
    """An opaque cursor: the customer id, URL-safe."""
    return base64.urlsafe_b64encode(customer_id.bytes).decode().rstrip("=")


def parse_cursor(cursor: str) -> uuid.UUID:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return uuid.UUID(bytes=raw)
    except (ValueError, binascii.Error):
        raise InvalidInput(
            "Invalid value for argument 'after': not a cursor this field answered", field="after"
        ) from None


def parse_name(raw: str) -> str:
    name = raw.strip()
    if not 1 <= len(name) <= MAX_NAME or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"A segment's name is 1 to {MAX_NAME} letters, digits, spaces and _ . : / -, "
            "starting with a letter or digit",
            field="name",
        )
    return name


def _from(segment: SavedSegment, *columns: Any) -> Select[Any]:
    """Members from ``FLOOR`` on (a bound parameter: one statement, cached, per shape)."""
    query = select(*columns).select_from(Customer)
    if segment.definition.reads_scores:
        query = query.outerjoin(
            CustomerScore,
            and_(CustomerScore.customer_id == Customer.id, CustomerScore.customer_id >= FLOOR),
        )
    return query.where(Customer.id >= FLOOR, segment.members())


def page_query(
    segment: SavedSegment, first: int, after: uuid.UUID | None
) -> tuple[Select[Any], dict[str, Any]]:
    """The statement of a page (one more id than ``first``: is there a next page?) and
    its values."""
    floor = EVERYONE if after is None else _successor(after)
    query = _from(segment, Customer.id).order_by(Customer.id).limit(first + 1)
    return query, {"floor": floor}


class SegmentStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def save(
        self, name: str, data: Mapping[str, Any], *, include_suppressed: bool = False
    ) -> SavedSegment:
        """Create or replace the segment ``name``; ``InvalidInput`` says what is wrong."""
        name = parse_name(name)
        definition = parse(data)
        now = utcnow()
        async with self._sessions.begin() as session:
            row = await session.get(SegmentRow, name, with_for_update=True)
            if row is None:
                row = SegmentRow(name=name, created_at=now)
                session.add(row)
            row.definition = definition.as_json()
            row.include_suppressed = include_suppressed
            row.updated_at = now
            created = row.created_at
        return SavedSegment(name, definition, include_suppressed, created, now)

    async def delete(self, name: str) -> bool:
        async with self._sessions.begin() as session:
            # Stripped as ``save`` and ``get`` strip it: the name the writer saved under.
            statement = delete(SegmentRow).where(SegmentRow.name == name.strip())
            result = await session.execute(statement)
            return bool(getattr(result, "rowcount", 0))

    async def get(self, name: str) -> SavedSegment | None:
        async with self._sessions() as session:
            row = await session.get(SegmentRow, name.strip())
            return _saved(row) if row is not None else None

    async def all(self) -> list[SavedSegment]:
        async with self._sessions() as session:
            rows = await session.scalars(select(SegmentRow).order_by(SegmentRow.name))
            return [_saved(row) for row in rows]

    async def page(self, segment: SavedSegment, first: int, after: str | None) -> Page:
        """Up to ``first`` members after the cursor ``after``, in customer-id order."""
        last = None if after is None else parse_cursor(after)
        if last is not None and _successor(last) is None:
            return Page([], after, False)  # after the greatest id there is
        query, binds = page_query(segment, first, last)
        async with self._sessions() as session:
            ids = list((await session.scalars(query, binds)).all())
        more = len(ids) > first
        ids = ids[:first]
        return Page(ids, cursor_of(ids[-1]) if ids else after, more)

    async def size(self, segment: SavedSegment) -> int:
        async with self._sessions() as session:
            found = await session.scalar(_from(segment, func.count()), {"floor": EVERYONE})
            return int(found or 0)

    async def memberships(self, customer_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
        """The saved segments each of these customers is in, by name, in one query."""
        found: dict[uuid.UUID, list[str]] = {i: [] for i in customer_ids}
        if not customer_ids:
            return found
        segments = await self.all()
        if not segments:
            return found
        async with self._sessions() as session:
            for ids in _chunks(list(customer_ids), _MAX_IDS):
                for group in _groups(segments, len(ids)):
                    parts = [
                        _from(segment, literal(segment.name).label("segment"), Customer.id).where(
                            Customer.id.in_(ids)
                        )
                        for segment in group
                    ]
                    statement = union_all(*parts)
                    rows = (await session.execute(statement, {"floor": EVERYONE})).all()
                    for name, customer_id in rows:
                        found[customer_id].append(name)
        for names in found.values():
            names.sort()
        return found


# Each segment's part of a membership statement binds every id asked about, and Postgres's
# driver takes at most 32,767 parameters a statement: a batch of 1,000 customers asked
# about 33 saved segments at once was refused (and the whole batch answered null).
_MAX_PARAMETERS = 30_000
_MAX_IDS = 5_000


def _chunks(ids: list[uuid.UUID], size: int) -> list[list[uuid.UUID]]:
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def _groups(segments: Sequence[SavedSegment], ids: int) -> list[list[SavedSegment]]:
    """The segments in groups whose statement stays under the parameter limit (a segment
    whose own values pass it is alone in its group)."""
    groups: list[list[SavedSegment]] = [[]]
    used = 0
    for segment in segments:
        cost = ids + segment.definition.values + 2  # its ids, values, name and floor
        if groups[-1] and used + cost > _MAX_PARAMETERS:
            groups.append([])
            used = 0
        groups[-1].append(segment)
        used += cost
    return groups


def _successor(customer_id: uuid.UUID) -> uuid.UUID | None:
    """The next id up: ``id >= successor`` is ``id > customer_id``, in one statement
    shape with the first page's ``id >= nil``."""
    following = customer_id.int + 1
    return uuid.UUID(int=following) if following < 1 << 128 else None


def _saved(row: SegmentRow) -> SavedSegment:
    # Stored definitions were checked when saved; parsing again rebuilds the clause
    # (and refuses one a later release no longer accepts, rather than guessing).
    return SavedSegment(
        row.name, parse(row.definition), row.include_suppressed, row.created_at, row.updated_at
    )
