"""Source records as they arrive, and the prepared form the linker compares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.identity.config import IdentityConfig
from gateway.identity.source_ids import DEFAULT_SOURCE_IDS, SourceIds
from gateway.identity.values import (
    block_hash,
    dob_key,
    email_parts,
    external_id_key,
    fold,
    name_key,
    phone_key,
    postcode_key,
    soundex,
    text_key,
)

RECORD_FIELDS = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "date_of_birth",
    "address",
    "city",
    "postcode",
)


# A blocking key that narrows the birth date's: (key, the birth-date key, "postcode" or
# "city", the postcode or the town's phonetic code).  Not stored: its members are those of
# the birth-date key with that value (``refinement_value``).
Refinement = tuple[int, int, str, str]


def refinement_value(kind: str, postcode: str | None, city: str | None) -> str:
    """What a stored record with this (folded) postcode and town shares with the
    refinements of ``kind`` it is in: the postcode, or the town's phonetic code."""
    if kind == "postcode":
        return postcode or ""
    return soundex(city) if city else ""


class RecordError(ValueError):
    """A record that cannot be linked; ``field`` names the culprit (never its value)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


@dataclass(slots=True)
class PreparedRecord:
    """One source record: what it said (``values``) and its comparison keys."""

    source: str
    external_id: str
    observed_at: datetime
    values: dict[str, str]  # the attributes to store, cleaned but not folded
    email_key: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    date_of_birth: str | None
    address: str | None
    city: str | None
    postcode: str | None
    blocks: tuple[int, ...] = ()  # hashed blocking keys
    stored_blocks: tuple[int, ...] = ()  # those stored (all but the refinements)
    refinements: tuple[Refinement, ...] = ()
    # The e-mail and phone as the source gave them, placeholders included: they never link
    # records, but an erased person's address must still refuse the record (erasure wins).
    given_email: str | None = None
    given_phone: str | None = None

    @property
    def identity_key(self) -> tuple[str, str]:
        return self.source, self.external_id

    def block_keys(self) -> tuple[int, ...]:
        return self.blocks

    def stored_block_keys(self) -> tuple[int, ...]:
        """The keys ``identity_block_keys`` holds for this record, and a batch looks up:
        all but the birth date's refinements (``refinements``)."""
        return self.stored_blocks

    def index_keys(self) -> None:
        """Computes ``blocks``, ``stored_blocks`` and ``refinements`` (once: the linker,
        the loader and the writer all ask for them)."""
        self.blocks, self.stored_blocks, self.refinements = self._block_keys()

    def _block_keys(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[Refinement, ...]]:
        """Blocking keys, so that a typo in any one field still leaves a shared block: a
        phonetic name (either one, so swapped names still meet) with the postcode, birth
        year or phonetic town; both phonetic names together (for a birth year typed
        wrong); the birth date alone and with the postcode or town (for records whose
        names both changed).

        The birth date with the postcode or town only narrows the birth date's block
        (every record in it is in that one too; it matters when that one is too big to
        compare): it is not stored but found among the birth date block's members, which
        a batch reads anyway, a fifth fewer rows to write for a record with an address."""
        keys: list[str] = []
        city = soundex(self.city) if self.city else ""
        codes = []
        for name in (self.first_name, self.last_name):
            code = soundex(name) if name else ""
            if not code:
                continue
            codes.append(code)
            if self.postcode:
                keys.append(f"np:{code}:{self.postcode}")
            if self.date_of_birth:
                keys.append(f"ny:{code}:{self.date_of_birth[:4]}")
            if city:
                keys.append(f"nc:{code}:{city}")
        if len(codes) == 2:
            keys.append(f"nn:{':'.join(sorted(codes))}")
        hashes = [block_hash(key) for key in keys]
        refinements: list[Refinement] = []
        if self.date_of_birth:
            date = block_hash(f"d:{self.date_of_birth}")
            hashes.append(date)
            if self.postcode:
                key = block_hash(f"dp:{self.date_of_birth}:{self.postcode}")
                refinements.append((key, date, "postcode", self.postcode))
            if city:
                key = block_hash(f"dc:{self.date_of_birth}:{city}")
                refinements.append((key, date, "city", city))
        stored = tuple(dict.fromkeys(hashes))
        every = stored
        if refinements:
            every = tuple(dict.fromkeys((*stored, *(key for key, *_ in refinements))))
        return every, stored, tuple(refinements)

    def compared(self) -> tuple[str | None, ...]:
        """The comparison keys in ``comparison.FIELDS`` order, as the scorer takes them."""
        return (
            self.first_name,
            self.last_name,
            self.date_of_birth,
            self.address,
            self.city,
            self.postcode,
            self.email_key,
            self.phone,
        )

    def comparable(self) -> dict[str, str | None]:
        return {
            "email": self.email_key,
            "phone": self.phone,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "date_of_birth": self.date_of_birth,
            "address": self.address,
            "city": self.city,
            "postcode": self.postcode,
        }


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _observed(raw: Any) -> datetime:
    if raw is None or raw == "":
        return datetime.now(UTC)
    if isinstance(raw, datetime):
        stamp = raw
    else:
        try:
            stamp = datetime.fromisoformat(str(raw).strip())
        except ValueError:
            raise RecordError("observed_at", "not an ISO 8601 time") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def prepare(
    data: Mapping[str, Any],
    source: str,
    config: IdentityConfig,
    source_ids: SourceIds = DEFAULT_SOURCE_IDS,
    observed_at: datetime | None = None,
) -> PreparedRecord:
    """Validate and normalise one raw record; ``RecordError`` names the bad field.
    A record without its own ``observed_at`` was observed at ``observed_at`` (now when
    not given).

    The external id must be one the source's upstream can have (``source_ids``): it is
    sent there later, and a path such as ``customers/../orders.json`` is someone else's.
    """
    raw = {name: _text(data.get(name)) for name in (*RECORD_FIELDS, "external_id")}
    try:
        external_id = external_id_key(raw["external_id"], config)
    except ValueError as exc:
        raise RecordError("external_id", str(exc)) from None
    if problem := source_ids.problem(source, external_id):
        raise RecordError("external_id", problem)
    try:
        email, email_key = email_parts(raw["email"], config)
    except ValueError:
        raise RecordError("email", "not an email address") from None
    try:
        phone = phone_key(raw["phone"], config)
    except ValueError as exc:
        raise RecordError("phone", str(exc)) from None
    try:
        dob = dob_key(raw["date_of_birth"], config)
    except ValueError as exc:
        raise RecordError("date_of_birth", str(exc)) from None
    for name in ("first_name", "last_name", "city"):
        if raw[name] and len(raw[name] or "") > 200:
            raise RecordError(name, "longer than 200 characters")
    first, last = name_key(raw["first_name"], config), name_key(raw["last_name"], config)
    address, city = text_key(raw["address"], config), text_key(raw["city"], config)
    postcode = postcode_key(raw["postcode"], config)
    # Store what the source said, minus placeholders; dates and phones in canonical form.
    values = {
        "email": email,
        "phone": phone,
        "first_name": raw["first_name"] if first else None,
        "last_name": raw["last_name"] if last else None,
        "date_of_birth": f"{dob[:4]}-{dob[4:6]}-{dob[6:]}" if dob else None,
        "address": raw["address"] if address else None,
        "city": raw["city"] if city else None,
        "postcode": raw["postcode"] if postcode else None,
    }
    record = PreparedRecord(
        source=source,
        external_id=external_id,
        observed_at=_observed(data.get("observed_at") or observed_at),
        values={k: v for k, v in values.items() if v is not None},
        email_key=email_key,
        phone=phone,
        first_name=first,
        last_name=last,
        date_of_birth=dob,
        address=address,
        city=city and fold(city),
        postcode=postcode,
        given_email=raw["email"],
        given_phone=raw["phone"],
    )
    record.index_keys()
    return record
