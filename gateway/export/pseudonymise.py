"""Pseudonymisation of exported rows: identifiers become keyed hashes, names go.

E-mails, phones and source ids become ``HMAC-SHA256(key, kind:value)`` (hex): the same
person gets the same value in every run, so joins in the warehouse still work, while
nobody without the key can test a guess.  E-mails are lower-cased and trimmed, phones
reduced to their digits first, so two spellings of one address hash alike.  Names,
dates of birth and addresses are dropped; attribute values other than a short list of
harmless ones are emptied; event properties lose any key that names a person and any
value that looks like an e-mail (hashed instead).  Only the rows that can hold such a
value are parsed: a vectorised regex picks them, the rest pass through untouched.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from gateway.settings import Settings

# Attribute values that identify nobody and are kept as they are.
HARMLESS_ATTRIBUTES = frozenset({"locale", "language", "country", "currency", "timezone"})
_HASHED_ATTRIBUTES = {"email": "email", "phone": "phone"}
# Property keys (lower-cased, without separators) whose values name a person.
_PERSONAL_KEYS = frozenset(
    {
        "email",
        "emailaddress",
        "phone",
        "phonenumber",
        "mobile",
        "name",
        "firstname",
        "lastname",
        "fullname",
        "username",
        "address",
        "address1",
        "address2",
        "street",
        "city",
        "postcode",
        "zip",
        "zipcode",
        "birthday",
        "dateofbirth",
        "dob",
        "ip",
        "ipaddress",
    }
)
_HASHED_KEYS = {"email": "email", "emailaddress": "email", "phone": "phone"}
_HASHED_KEYS |= {"phonenumber": "phone", "mobile": "phone"}
_EMAIL = re.compile(r"[^@\s\"'<>]+@[^@\s\"'<>]+\.[^@\s\"'<>]+")
# A row whose properties may hold one of the above: parsed and scrubbed.
_SUSPECT = (
    r"@|\"(?i:e[-_]?mail|phone|mobile|name|first|last|full|user|address|street|city|"
    r"post|zip|birth|dob|ip)"
)


def _normal(key: str) -> str:
    return re.sub(r"[-_\s]", "", key).lower()


class Pseudonymiser:
    def __init__(self, key: bytes) -> None:
        self._key = key
        # Keyed once: each value then costs a copy of the keyed state, not a new HMAC.
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    @classmethod
    def from_settings(cls, settings: Settings) -> Pseudonymiser:
        return cls(settings.export_pseudonym_key())

    def digest(self, kind: str, value: str) -> str:
        if kind == "email":
            value = value.strip().lower()
        elif kind == "phone":
            value = re.sub(r"\D", "", value)
        keyed = self._keyed.copy()
        keyed.update(f"{kind}:{value}".encode())
        return keyed.hexdigest()

    def _hashed(self, array: pa.Array, kind: str) -> pa.Array:
        return pa.array(
            [None if v is None else self.digest(kind, v) for v in array.to_pylist()],
            type=pa.string(),
        )

    def batch(self, table: str, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch as a pseudonymised export holds it (same columns; dropped ones are
        left out by the caller's schema)."""
        scrub: dict[str, Callable[[pa.RecordBatch], pa.Array]] = {
            "customers": self._customers,
            "identities": self._identities,
            "events": self._events,
            "attributes": self._attributes,
        }
        changed = scrub.get(table)
        if changed is None or batch.num_rows == 0:
            return batch
        return changed(batch)

    def _customers(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return _replace(
            batch,
            email=self._hashed(batch.column("email"), "email"),
            phone=self._hashed(batch.column("phone"), "phone"),
        )

    def _identities(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        sources = batch.column("source").to_pylist()
        ids = batch.column("external_id").to_pylist()
        hashed = [
            None if i is None else self.digest("id", f"{s}:{i}")
            for s, i in zip(sources, ids, strict=True)
        ]
        return _replace(batch, external_id=pa.array(hashed, type=pa.string()))

    def _attributes(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        names = batch.column("name").to_pylist()
        values = batch.column("value").to_pylist()
        out: list[str | None] = []
        for name, value in zip(names, values, strict=True):
            if value is None or name in HARMLESS_ATTRIBUTES:
                out.append(value)
            elif name in _HASHED_ATTRIBUTES:
                out.append(self.digest(_HASHED_ATTRIBUTES[name], value))
            else:
                out.append(None)
        return _replace(batch, value=pa.array(out, type=pa.string()))

    def _events(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        properties = batch.column("properties")
        suspect = pc.fill_null(pc.match_substring_regex(properties, _SUSPECT), False)
        if not pc.any(suspect).as_py():
            return batch
        values = properties.to_pylist()
        for index in pc.indices_nonzero(suspect).to_pylist():
            values[index] = orjson.dumps(self._scrub(orjson.loads(values[index]))).decode()
        return _replace(batch, properties=pa.array(values, type=pa.string()))

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, dict):
            kept: dict[str, Any] = {}
            for key, item in value.items():
                normal = _normal(str(key))
                if normal in _HASHED_KEYS and isinstance(item, str):
                    kept[key] = self.digest(_HASHED_KEYS[normal], item)
                elif normal not in _PERSONAL_KEYS:
                    kept[key] = self._scrub(item)
            return kept
        if isinstance(value, list):
            return [self._scrub(item) for item in value]
        if isinstance(value, str) and _EMAIL.search(value):
            return _EMAIL.sub(lambda m: self.digest("email", m.group(0)), value)
        return value


def _replace(batch: pa.RecordBatch, **columns: pa.Array) -> pa.RecordBatch:
    arrays = [columns.get(name, batch.column(name)) for name in batch.schema.names]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
