"""The one record every part of the recommender speaks: a user touching an item.

Its own module so that reading history (the demo, the build) costs no numpy import.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Interaction:
    """One user touching one item: a view, a cart add, a purchase or a rating."""

    user: str
    item: str
    kind: str
    at: float  # seconds since the epoch
