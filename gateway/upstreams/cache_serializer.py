"""How cached values are written to a shared cache: typed JSON, never pickles.

aiocache's default for Redis is pickle, and unpickling runs whatever the bytes say:
anyone able to write to that Redis would run code on every instance. Here each value
the gateway caches has an explicit encoding, tagged with its type, and is decoded by
that type's own constructor or pydantic model; anything else (a pickle, another
application's entry, a truncated or tampered value) decodes to nothing, which every
reader already treats as a miss.

    null | "text" | 12              None, str (persisted queries), int (stock)
    {"$": "entry", "at": …, "v": …}  cache.Entry: an upstream's answer and its time
    {"$": "profile", "r": …, "p": …} a stored profile and when to refresh it
    {"$": "CrmContact", "d": {…}}    an adapter record (each record type by name)
    {"$": "tuple", "i": […]}         a customer's orders
    {"$": "analytics", …}            a customer's analytics data
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from aiocache.serializers import BaseSerializer
from pydantic import BaseModel

logger = logging.getLogger("gateway.cache")

Encode = Callable[[Any], Any]
Decode = Callable[[dict[str, Any]], Any]


class UndecodableEntry(ValueError):
    """A cached value this gateway did not write, or cannot read back."""


class TypedJsonSerializer(BaseSerializer):  # type: ignore[misc]
    """aiocache serializer: ``dumps`` to JSON bytes, ``loads`` back to the typed value,
    or to None (a miss) when the bytes are not a value this gateway wrote."""

    DEFAULT_ENCODING = None  # bytes in and out: orjson writes and reads them directly

    def __init__(self) -> None:
        super().__init__()
        self._warned = False

    def dumps(self, value: Any) -> bytes:
        return orjson.dumps(encode(value))

    def loads(self, value: bytes | None) -> Any:
        if value is None:
            return None
        try:
            return decode(orjson.loads(value))
        except Exception as exc:  # noqa: BLE001 - whatever the bytes are, they are a miss, never a crash
            if not self._warned:  # once per process: one planted key must not flood the log
                self._warned = True
                logger.warning(
                    "a cache entry could not be decoded and was treated as a miss "
                    "(written by another version or application?): %s",
                    type(exc).__name__,
                )
            return None


def encode(value: Any) -> Any:
    """The JSON form of a cacheable value; TypeError for a type with no encoding."""
    if value is None or (isinstance(value, str | int) and not isinstance(value, bool)):
        return value
    codec = _codecs().get(type(value))
    if codec is None:
        raise TypeError(f"no cache encoding for {type(value).__name__}")
    tag, write, _ = codec
    return {"$": tag, **write(value)}


def decode(data: Any) -> Any:
    if data is None or (isinstance(data, str | int) and not isinstance(data, bool)):
        return data
    if not isinstance(data, dict):
        raise UndecodableEntry("not a tagged value")
    found = _by_tag().get(data.get("$"))  # type: ignore[arg-type]
    if found is None:
        raise UndecodableEntry("unknown tag")
    return found(data)


def _record(model: type[BaseModel]) -> tuple[Encode, Decode]:
    return (
        lambda value: {"d": value.model_dump(mode="json")},
        # Lax: the JSON forms (ISO times, decimal strings, lists for tuples) are what the
        # records' own validators then check, as for any payload.
        lambda data: model.model_validate(data["d"], strict=False),
    )


@cache
def _codecs() -> dict[type[Any], tuple[str, Encode, Decode]]:
    # Imported here: these modules import the cache, which imports this one.
    from adapters import records
    from gateway.privacy.consent import ConsentRecord
    from gateway.profiles.customers import CustomerProfile, IdentityRecord
    from gateway.profiles.profile_cache import _Entry as ProfileEntry
    from gateway.upstreams.cache import Entry
    from gateway.upstreams.federation import AnalyticsData

    def profile(p: CustomerProfile) -> dict[str, Any]:
        return {
            "id": str(p.id),
            "email": p.email,
            "phone": p.phone,
            "first_name": p.first_name,
            "last_name": p.last_name,
            "locale": p.locale,
            "created_at": p.created_at.isoformat(),
            "updated_at": p.updated_at.isoformat(),
            "identities": [[i.source, i.external_id] for i in p.identities],
            "consents": [
                [c.purpose, c.granted, c.source, c.recorded_at.isoformat()] for c in p.consents
            ],
        }

    def read_profile(d: dict[str, Any]) -> CustomerProfile:
        return CustomerProfile(
            id=uuid.UUID(d["id"]),
            email=_text(d["email"]),
            phone=_text(d["phone"]),
            first_name=_text(d["first_name"]),
            last_name=_text(d["last_name"]),
            locale=_text(d["locale"]),
            created_at=datetime.fromisoformat(d["created_at"]),
            updated_at=datetime.fromisoformat(d["updated_at"]),
            identities=tuple(IdentityRecord(str(s), str(e)) for s, e in d["identities"]),
            consents=tuple(
                ConsentRecord(str(p), _flag(g), str(s), datetime.fromisoformat(t))
                for p, g, s, t in d["consents"]
            ),
        )

    codecs: dict[type[Any], tuple[str, Encode, Decode]] = {
        Entry: (
            "entry",
            lambda e: {"at": e.fetched_at.isoformat(), "v": encode(e.value)},
            lambda d: Entry(decode(d["v"]), datetime.fromisoformat(d["at"])),
        ),
        ProfileEntry: (
            "profile",
            lambda e: {"r": e.refresh_at, "p": profile(e.profile)},
            lambda d: ProfileEntry(read_profile(d["p"]), float(d["r"])),
        ),
        tuple: (
            "tuple",
            lambda t: {"i": [encode(item) for item in t]},
            lambda d: tuple(decode(item) for item in d["i"]),
        ),
        AnalyticsData: (
            "analytics",
            lambda a: {"u": a.user_id, "e": [e.model_dump(mode="json") for e in a.events]},
            lambda d: AnalyticsData(
                _text(d["u"]),
                tuple(records.AnalyticsEvent.model_validate(e, strict=False) for e in d["e"]),
            ),
        ),
    }
    for model in (
        records.CrmContact,
        records.CommerceCustomer,
        records.Order,
        records.Product,
        records.InventoryLevel,
        records.AnalyticsTraits,
        records.AnalyticsEvent,
        records.ExternalId,
    ):
        codecs[model] = (model.__name__, *_record(model))
    return codecs


@cache
def _by_tag() -> dict[str, Decode]:
    return {tag: read for tag, _, read in _codecs().values()}


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise UndecodableEntry("expected text")


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise UndecodableEntry("expected a boolean")


__all__ = ["TypedJsonSerializer", "UndecodableEntry", "decode", "encode"]
