"""The export tests' engine, on a database of their own (tests/export/people.py)."""

from __future__ import annotations

from tests.export.people import engine
from tests.own_database import own_database_url

__all__ = ["engine", "own_database_url"]
