"""Run Alembic migrations from code, for `gateway migrate`, the demo and the tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncConnection

import migrations

_SCRIPTS = Path(migrations.__file__).parent


def alembic_config(database_url: str) -> Config:
    """A config that finds the scripts inside the installed package, not beside a checkout."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    # Percent signs in passwords would otherwise be read as interpolation.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["skip_logging_config"] = True
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str) -> None:
    command.current(alembic_config(database_url))


async def upgrade_connection(connection: AsyncConnection, revision: str = "head") -> None:
    """Upgrade through an open async connection (inside a running event loop)."""
    config = alembic_config(str(connection.engine.url))
    config.attributes["connection"] = None

    def _run(sync_connection: object) -> None:
        config.attributes["connection"] = sync_connection
        command.upgrade(config, revision)

    await connection.run_sync(_run)
