"""What the demo adds so every page of the console has something to show: a few pairs of
records left for a person to judge in identity review, a stored template with two
versions to compare, a saved segment, a running experiment with a campaign's results
(``demo/console_experiment.py``), and scores (so RFM segments to preview a template for).

Safe to run on every start: each part is skipped when it is already there. Scores take
most of a minute of CPU on the first start (the propensity model is trained): ``gateway demo``
builds them in the background while it serves (``build_scores_in_background``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from threadpoolctl import threadpool_limits

from demo.console_experiment import prepare_demo_experiment
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Identity, Template
from gateway.db.score_models import CustomerScore
from gateway.ingest.importer import Importer
from gateway.scores.build import build
from gateway.scores.store import ScoreStore
from gateway.segments.store import SegmentStore
from gateway.templates.render import RenderFormat

log = logging.getLogger("demo.console_data")
REVIEW_SOURCE = "legacy_crm"
# Two records each, one person or two: the same surname, the first name one letter
# off and the birth date one digit off. Under the built-in priors the linker neither
# merges nor separates them: it leaves each pair for a person.
_PAIRS = (
    ("Zandvoort", "Henrike", "Henrika", "1966-05-21", "1966-05-27"),
    ("Brackwede", "Matthias", "Mathias", "1971-09-03", "1971-09-08"),
    ("Quellenhof", "Annelie", "Anneliese", "1983-02-14", "1983-02-11"),
)
TEMPLATE = "welcome"
# A saved audience for the studio to preview a template for (beside the RFM segments):
# customers with two orders or more, mailable (suppressed ones are left out by default).
SEGMENT = "repeat-buyers"
SEGMENT_FILTER = {"all": [{"field": "frequency", "gte": 2}, {"field": "recency", "lte": 365}]}
TEMPLATE_VERSIONS = (
    "<h1>Hello {{ customer.first_name | default: 'there' }}</h1>\n"
    "<p>Thanks for shopping with us.</p>\n",
    "<h1>Hello {{ customer.first_name | default: 'there' }}</h1>\n"
    "<p>Picked for you:</p>\n"
    "<ul>\n"
    "{% for product in customer.recommendations %}"
    "  <li>{{ product.title }}: {{ product.reason }}</li>\n"
    "{% endfor %}"
    "</ul>\n",
)


def review_rows() -> list[dict[str, str]]:
    rows = []
    for index, (surname, first, variant, born, typo) in enumerate(_PAIRS):
        rows.append(
            {
                "external_id": f"L{index}a",
                "first_name": first,
                "last_name": surname,
                "date_of_birth": born,
            }
        )
        rows.append(
            {
                "external_id": f"L{index}b",
                "first_name": variant,
                "last_name": surname,
                "date_of_birth": typo,
            }
        )
    return rows


async def prepare_console_data(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Review pairs, the example template and segment, and the experiment with a
    campaign's results (demo/console_experiment.py), each unless already there."""
    async with sessions() as session:
        paired = await session.scalar(
            select(func.count()).select_from(Identity).where(Identity.source == REVIEW_SOURCE)
        )
        templated = await session.scalar(
            select(func.count()).select_from(Template).where(Template.name == TEMPLATE)
        )
    if not paired:
        rows: list[tuple[int, dict[str, Any] | str]] = list(enumerate(review_rows(), start=2))
        await Importer(sessions, REVIEW_SOURCE, observed_at=datetime.now(UTC)).run(rows)
    segments = SegmentStore(sessions)
    if await segments.get(SEGMENT) is None:
        await segments.save(SEGMENT, SEGMENT_FILTER)
    if not templated:
        async with sessions.begin() as session:
            for version, source in enumerate(TEMPLATE_VERSIONS, start=1):
                session.add(
                    Template(
                        name=TEMPLATE,
                        version=version,
                        source=source,
                        format=RenderFormat.HTML.value,
                        created_at=datetime.now(UTC),
                    )
                )
    await prepare_demo_experiment(sessions)


async def build_scores_if_missing(
    sessions: async_sessionmaker[AsyncSession], model_key: bytes
) -> bool:
    """``gateway scores build`` unless scores are stored; whether it built them.
    ``model_key`` seals the model (``model_seal.deployment_model_key``)."""
    async with sessions() as session:
        if await session.scalar(select(func.count()).select_from(CustomerScore)):
            return False
    # One thread for the model's training: the server's event loop keeps the other core.
    with threadpool_limits(limits=1):
        await build(ScoreStore(sessions, model_key))
    return True


def build_scores_in_background(database_url: str, model_key: bytes) -> threading.Thread:
    """The scores, built in a thread of their own while the demo serves (SQLite in WAL
    mode lets the server read meanwhile; the build writes its rows in one transaction)."""

    async def run() -> None:
        engine = create_engine(database_url)
        try:
            if await build_scores_if_missing(create_sessionmaker(engine), model_key):
                log.info("demo scores built: the studio can preview for RFM segments")
        finally:
            await engine.dispose()

    def target() -> None:
        try:
            asyncio.run(run())
        except Exception:
            log.exception("demo scores not built (run `gateway scores build`)")

    thread = threading.Thread(target=target, name="demo-scores", daemon=True)
    thread.start()
    return thread
