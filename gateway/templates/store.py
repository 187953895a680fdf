"""Stored Liquid templates: every save is a new, immutable version of a name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Template
from gateway.errors import Conflict, InvalidInput
from gateway.templates.render import Renderer, RenderFormat

# Names appear in ESP configuration and logs: keep them plain.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


@dataclass(frozen=True, slots=True)
class TemplateVersion:
    name: str
    version: int
    source: str
    format: RenderFormat
    created_at: datetime


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: int
    format: RenderFormat
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TemplateName:
    """A template's name and its latest version, without the source."""

    name: str
    latest: VersionInfo


def parse_template_name(raw: str, field: str = "name") -> str:
    name = raw.strip()
    if not _NAME.match(name):
        raise InvalidInput(
            f"Invalid value for argument '{field}': a template name has 1-200 "
            "letters, digits, '_', '.' or '-', starting with a letter or digit",
            field=field,
        )
    return name


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were stored as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _version(row: Template) -> TemplateVersion:
    return TemplateVersion(
        row.name, row.version, row.source, RenderFormat(row.format), _utc(row.created_at)
    )


class TemplateStore:
    """Reads and writes template versions; each call is one short transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], renderer: Renderer) -> None:
        self._sessions = sessions
        self._renderer = renderer

    async def save(self, name: str, source: str, format: RenderFormat) -> TemplateVersion:
        """Validate the source (a syntax error saves nothing), then add the next version."""
        name = parse_template_name(name)
        await self._renderer.compile(source, format, field="source")
        try:
            return await self._insert(name, source, format)
        except IntegrityError:
            # A concurrent save took the same version number; the retry takes the next.
            try:
                return await self._insert(name, source, format)
            except IntegrityError as exc:
                raise Conflict(
                    f"Template '{name}' changed concurrently; retry the request", field="name"
                ) from exc

    async def _insert(self, name: str, source: str, format: RenderFormat) -> TemplateVersion:
        async with self._sessions.begin() as session:
            latest = await session.scalar(
                select(func.max(Template.version)).where(Template.name == name)
            )
            row = Template(
                name=name,
                version=(latest or 0) + 1,
                source=source,
                format=format.value,
                created_at=datetime.now(UTC),
            )
            session.add(row)
            await session.flush()
            return _version(row)

    async def get(self, name: str, version: int | None = None) -> TemplateVersion | None:
        """One version, or the latest when ``version`` is None."""
        query = select(Template).where(Template.name == name)
        if version is None:
            query = query.order_by(Template.version.desc()).limit(1)
        else:
            query = query.where(Template.version == version)
        async with self._sessions() as session:
            row = await session.scalar(query)
            return _version(row) if row else None

    async def history(self, name: str) -> list[VersionInfo]:
        """Every version of a name, newest first (without the sources)."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(Template.version, Template.format, Template.created_at)
                .where(Template.name == name)
                .order_by(Template.version.desc())
            )
            return [VersionInfo(v, RenderFormat(f), _utc(c)) for v, f, c in rows]

    async def names(self, limit: int = 200) -> list[TemplateName]:
        """Every template name with its latest version, by name (the studio's list)."""
        latest = (
            select(Template.name, func.max(Template.version).label("version"))
            .group_by(Template.name)
            .subquery()
        )
        async with self._sessions() as session:
            rows = await session.execute(
                select(Template.name, Template.version, Template.format, Template.created_at)
                .join(
                    latest,
                    (Template.name == latest.c.name) & (Template.version == latest.c.version),
                )
                .order_by(Template.name)
                .limit(limit)
            )
            return [
                TemplateName(n, VersionInfo(v, RenderFormat(f), _utc(c))) for n, v, f, c in rows
            ]


def open_templates(sessions: async_sessionmaker[AsyncSession], renderer: Renderer) -> TemplateStore:
    return TemplateStore(sessions, renderer)
