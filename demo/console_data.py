"""What the demo adds so every page of the console has something to show: scores (and
so RFM segments to preview a template for), a few pairs of records left for a person
to judge in identity review, and a stored template with two versions to compare.

Safe to run on every start: each part is skipped when it is already there.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Identity, Template
from gateway.db.score_models import CustomerScore
from gateway.ingest.importer import Importer
from gateway.scores.build import build
from gateway.scores.store import ScoreStore
from gateway.templates.render import RenderFormat

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
    """Scores, review pairs and the example template, each unless already there."""
    async with sessions() as session:
        scored = await session.scalar(select(func.count()).select_from(CustomerScore))
        paired = await session.scalar(
            select(func.count()).select_from(Identity).where(Identity.source == REVIEW_SOURCE)
        )
        templated = await session.scalar(
            select(func.count()).select_from(Template).where(Template.name == TEMPLATE)
        )
    if not scored:
        await build(ScoreStore(sessions))
    if not paired:
        rows: list[tuple[int, dict[str, Any] | str]] = list(enumerate(review_rows(), start=2))
        await Importer(sessions, REVIEW_SOURCE, observed_at=datetime.now(UTC)).run(rows)
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
