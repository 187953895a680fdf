"""Secrets everyone knows, and the check that a server runs with none of them.

This repository is public, and so are two secrets in it: the demo's admin API key
(fixed, so the README's examples work) and the built-in erasure key (so the demo
erases without setup). A server started with either is open: the demo key reads and
erases everyone, and with the built-in erasure key a copy of the database tells
whether a given email address was erased. `gateway serve` refuses to start while
either is in use, unless it is started for a local demo (`--insecure-demo`).
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError

from gateway.access.api_keys import DEMO_API_KEY, DEMO_KEY_NAME, ApiKeys
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.settings import BUILTIN_ERASURE_KEY_PROBLEM, Settings

logger = logging.getLogger("gateway.public_secrets")


async def public_secrets_in_use(settings: Settings) -> list[str]:
    """What is wrong, one clause each, naming its fix; empty when nothing is."""
    problems = []
    if await _demo_key_active(settings):
        problems.append(
            f"the demo's public API key is active in this database "
            f"(run: gateway keys revoke {DEMO_KEY_NAME})"
        )
    if settings.erasure_key_is_builtin:
        problems.append(BUILTIN_ERASURE_KEY_PROBLEM)
    return problems


async def _demo_key_active(settings: Settings) -> bool:
    engine = create_engine(settings.database_url)
    try:
        return await ApiKeys(create_sessionmaker(engine)).is_active(DEMO_API_KEY)
    except (SQLAlchemyError, OSError) as exc:
        # Not migrated yet, or not reachable: the server starts and says so in /readyz;
        # the demo key is refused at every request anyway (gateway.access.api_keys).
        logger.warning("could not check for the demo API key: %s", type(exc).__name__)
        return False
    finally:
        await engine.dispose()
