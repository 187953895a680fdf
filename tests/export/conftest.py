"""The export tests' own database (tests/export/people.py)."""

from __future__ import annotations

from tests.export.people import engine, own_database_url

__all__ = ["engine", "own_database_url"]
