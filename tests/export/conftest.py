"""The export tests' engine, on a database of their own (tests/export/people.py)."""

from __future__ import annotations

from tests.export.people import engine

__all__ = ["engine"]
