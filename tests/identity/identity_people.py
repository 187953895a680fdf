"""A small labelled population with typo-ridden duplicates, made here (no data files):
people as a record-linkage test set would have them, and the truth of who is who."""

from __future__ import annotations

import random

_SYLLABLES = [
    "an", "be", "ca", "da", "el", "fi", "go", "ha", "in", "jo", "ka", "li", "ma", "no",
    "ol", "pe", "ra", "si", "ta", "ul", "ve", "wi", "ze", "bru", "dor", "fen", "gar",
    "hol", "kin", "lor", "mar", "nor", "ros", "sten", "ter", "wal",
]  # fmt: skip


def _name(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts))


def _typo(rng: random.Random, value: str) -> str:
    chars = list(value)
    at = rng.randrange(len(chars))
    kind = rng.choice(["replace", "insert", "delete", "swap"])
    if kind == "replace":
        chars[at] = rng.choice("aeiourstnl")
    elif kind == "insert":
        chars.insert(at, rng.choice("aeiourstnl"))
    elif kind == "delete" and len(chars) > 3:
        del chars[at]
    elif at + 1 < len(chars):
        chars[at], chars[at + 1] = chars[at + 1], chars[at]
    return "".join(chars)


def population(
    people: int = 400, duplicates: int = 100, seed: int = 7, prefix: str = "p"
) -> tuple[list[dict[str, str]], dict[str, str]]:
    """(rows for the importer, external id -> person): ``duplicates`` of the people appear
    twice, the copy with one typo in a name or one digit off in the birth date."""
    rng = random.Random(seed)
    rows, truth = [], {}
    originals = []
    for person in range(people):
        row = {
            "external_id": f"{prefix}{person:05d}",
            # A few common names (as in life) among many rarer ones.
            "first_name": _name(rng, 1 if rng.random() < 0.2 else 2),
            "last_name": _name(rng, 2 if rng.random() < 0.3 else 3),
            "date_of_birth": f"{rng.randint(1930, 2004)}-{rng.randint(1, 12):02d}-"
            f"{rng.randint(1, 28):02d}",
        }
        rows.append(row)
        originals.append(row)
        truth[row["external_id"]] = str(person)
    for copy, person in enumerate(rng.sample(range(people), duplicates)):
        row = dict(originals[person], external_id=f"{prefix}d{copy:05d}")
        field = rng.choice(["first_name", "last_name", "date_of_birth"])
        if field == "date_of_birth":
            digits = list(row[field])
            at = rng.choice([2, 3, 6, 9])
            digits[at] = str((int(digits[at]) + rng.randint(1, 8)) % 10)
            row[field] = "".join(digits)
        else:
            row[field] = _typo(rng, row[field])
        rows.append(row)
        truth[row["external_id"]] = str(person)
    rng.shuffle(rows)
    return rows, truth
