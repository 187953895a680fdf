"""Stored versions of the linkage model: save, list, activate, and the active one's scorer.

Versions are immutable: new parameters or new thresholds make a new version, so the
evidence of a link (its model version) keeps meaning what it meant.  The linker asks
for the active version once per batch (one indexed read); the compiled scorer of a
version is kept in the process, keyed by database and version.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from gateway.db.identity_models import IdentityModel
from gateway.db.models import Identity, utcnow
from gateway.errors import InvalidInput
from gateway.identity.scoring.comparison import Scorer
from gateway.identity.scoring.model import DEFAULT_MODEL, LinkageModel

_CACHED = 8
_scorers: OrderedDict[tuple[str, int, datetime], Scorer] = OrderedDict()
_DEFAULT_SCORER = Scorer(DEFAULT_MODEL)


@dataclass(frozen=True, slots=True)
class ModelSummary:
    version: int
    active: bool
    created_at: datetime
    match_probability: float
    review_probability: float
    trained: dict[str, Any]


def _model(row: IdentityModel | Any) -> LinkageModel:
    frequencies = row.term_frequencies or {}
    return LinkageModel.from_splink(
        row.settings,
        version=row.version,
        term_frequencies=frequencies.get("tables", {}),
        tf_totals=frequencies.get("totals", {}),
        match_probability=row.match_probability,
        review_probability=row.review_probability,
        trained=row.trained or {},
    )


def _row(model: LinkageModel, active: bool) -> IdentityModel:
    return IdentityModel(
        active=active,
        settings=model.to_splink(),
        term_frequencies={"tables": model.term_frequencies, "totals": model.tf_totals},
        match_probability=model.match_probability,
        review_probability=model.review_probability,
        trained=model.trained,
        created_at=utcnow(),
    )


async def identity_count(connection: AsyncConnection) -> int:
    """How many identities the database holds: the planner's estimate on Postgres (no scan
    of a big table per batch; refreshed by autovacuum), a count on SQLite."""
    if connection.dialect.name == "postgresql":
        estimate = await connection.scalar(
            text("SELECT reltuples::bigint FROM pg_class WHERE oid = 'identities'::regclass")
        )
        return max(int(estimate or 0), 0)
    return int(await connection.scalar(select(func.count()).select_from(Identity)) or 0)


async def active_scorer(connection: AsyncConnection) -> Scorer:
    """The scorer of the active version, or of the built-in priors when none is stored."""
    found = (
        await connection.execute(
            select(IdentityModel.version, IdentityModel.created_at)
            .where(IdentityModel.active.is_(True))
            .order_by(IdentityModel.version.desc())
            .limit(1)
        )
    ).first()
    if found is None:
        return _DEFAULT_SCORER
    key = (connection.engine.url.render_as_string(hide_password=True), found[0], found[1])
    scorer = _scorers.get(key)
    if scorer is None:
        columns = IdentityModel.__table__.c
        row = (await connection.execute(select(*columns).where(columns.version == found[0]))).one()
        scorer = _scorers[key] = Scorer(_model(row))
        while len(_scorers) > _CACHED:
            _scorers.popitem(last=False)
    _scorers.move_to_end(key)
    return scorer


class ModelStore:
    """The versions of one database's linkage model."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def save(self, model: LinkageModel, *, activate: bool = True) -> LinkageModel:
        """Store a new version (activated unless told otherwise); returns it with its number."""
        async with self._sessions.begin() as session:
            if activate:
                await session.execute(
                    update(IdentityModel).where(IdentityModel.active.is_(True)).values(active=False)
                )
            row = _row(model, activate)
            session.add(row)
            await session.flush()
            version = row.version
        return model.model_copy(update={"version": version})

    async def get(self, version: int | None = None) -> LinkageModel:
        """A version, or the active one (the built-in priors when none is stored)."""
        async with self._sessions() as session:
            query = select(IdentityModel)
            if version is None:
                query = query.where(IdentityModel.active.is_(True)).order_by(
                    IdentityModel.version.desc()
                )
            else:
                query = query.where(IdentityModel.version == version)
            row = (await session.execute(query.limit(1))).scalar_one_or_none()
        if row is None:
            if version is not None:
                raise InvalidInput(f"No identity model version {version}", field="version")
            return DEFAULT_MODEL
        return _model(row)

    async def versions(self) -> list[ModelSummary]:
        async with self._sessions() as session:
            rows = await session.scalars(select(IdentityModel).order_by(IdentityModel.version))
            return [
                ModelSummary(
                    r.version,
                    r.active,
                    r.created_at,
                    r.match_probability,
                    r.review_probability,
                    r.trained,
                )
                for r in rows
            ]

    async def activate(self, version: int) -> None:
        async with self._sessions.begin() as session:
            if await session.get(IdentityModel, version) is None:
                raise InvalidInput(f"No identity model version {version}", field="version")
            await session.execute(
                update(IdentityModel).where(IdentityModel.active.is_(True)).values(active=False)
            )
            await session.execute(
                update(IdentityModel).where(IdentityModel.version == version).values(active=True)
            )

    async def with_thresholds(
        self, match_probability: float | None, review_probability: float | None
    ) -> LinkageModel:
        """A new active version: the active parameters with other thresholds."""
        current = await self.get()
        changed = current.model_copy(
            update={
                "version": None,
                "match_probability": match_probability or current.match_probability,
                "review_probability": review_probability or current.review_probability,
            }
        )
        # Validated as a whole (review below match) before anything is stored.
        try:
            changed = LinkageModel.model_validate(changed.model_dump())
        except ValidationError as exc:
            message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            raise InvalidInput(message, field="thresholds") from None
        return await self.save(changed)
