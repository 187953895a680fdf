"""Pseudonymisation of exported rows: identifiers become keyed hashes, names go.

E-mails, phones and source ids become the digests ``Tombstones`` makes of them (an
``HMAC-SHA256`` of ``kind:value``, hex), keyed with the export's pseudonym key rather
than the erasure key: the same person gets the same value in every run, so joins in the
warehouse still work, while nobody without the key can test a guess.  Addresses and
phones are normalised as the profiles store them (lower-cased address, E.164 phone), so
two spellings of one hash alike; a value that is neither is dropped.  A customer's own
phone is hashed as stored when it is in E.164 form: every path that writes it stores
``normalize_phone``'s (or ``phone_key``'s) answer, which is what the same number in any
spelling elsewhere normalises to, and validating 100,000 stored numbers again cost an
export more than the rest of it.  Names, dates of
birth, addresses and operators' merge reasons (identity links) are dropped; attribute
values other than a short list of harmless ones are emptied; event properties lose any
key that names a person or a contact (names, phones, addresses, IPs, notes, user and
customer ids and objects: a source's raw id defeats its pseudonym), and in every string
left an e-mail is hashed, a phone number in international form (``+33 7 55 21 92 50``)
is hashed as one, and an IPv4 address is dropped.  Event types (a Segment track's name
is the sender's free text) are scrubbed the same way, and an event id holding an e-mail
or such a number is replaced by its keyed hash (unique and stable, so the warehouse
still joins on it).  What cannot be told from ordinary data is exported as sent: a name
in free text, a phone number in a national form (its digits are a SKU's, an order's, a
time's: dropping every such run emptied barcodes, URLs and tokens, a fresh review).
Only the rows that can hold such a value are parsed: a vectorised regex picks them, the
rest pass through untouched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from gateway.privacy.tombstones import Tombstones
from gateway.settings import Settings

# Attribute values that identify nobody and are kept as they are.
HARMLESS_ATTRIBUTES = frozenset({"locale", "language", "country", "currency", "timezone"})
_HASHED_ATTRIBUTES = frozenset({"email", "phone"})
# Property keys (lower-cased, without separators) that name a person: any key holding
# one of these parts (``shipping_phone``, ``customer_name``, ``billing_address``) or
# ending in ``ip``.  Broad on purpose: dropping a harmless ``product_name`` costs less
# than exporting a person's.
_PERSONAL_PARTS = (
    "phone",
    "mobile",
    "mail",
    "addr",
    "street",
    "postcode",
    "zip",
    "birth",
    "name",
    "contact",
    "recipient",
    "forward",
    "ipv",
    "note",
    "comment",
)
# Whole keys that name a person.
_PERSONAL_KEYS = frozenset({"city", "dob", "first", "last", "given", "family", "initials"})
# Words of a key (``shopify_customer_id``, ``telNumber``): a phone's, wherever they stand;
# a person's, alone or as an id or a number (``user_id``, ``customer_number``: a
# source's raw id defeats its pseudonym), not as a kind (``user_agent``,
# ``customer_type``). Words, not parts: "tel" took ``hotel`` (a fresh review).
_PHONE_WORDS = frozenset({"tel", "telefon", "telephone", "telefono", "fax"})
_PERSON_WORDS = frozenset({"user", "customer", "anonymous", "visitor", "member"})
_ID_WORDS = frozenset({"id", "ids", "number", "no", "num", "ref", "key", "uuid", "code", "login"})
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
# What ``normalize_phone`` answers: a plus and up to 15 digits, the first not a zero.
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_EMAIL = re.compile(r"[^@\s\"'<>]+@[^@\s\"'<>]+\.[^@\s\"'<>]+")
# A row whose properties may hold one of the above: parsed and scrubbed. ``%40`` is an
# ``@`` percent-encoded (once or more), as a link's query string carries an address (an
# ESP's click event keeps the link; unsubscribe and tracking links often name the
# recipient).
_SUSPECT = (
    r"@|\+\d|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|(?i:%(?:25)*40|phone|mobile|mail|"
    r"addr|street|post|zip|birth|name|city|dob|ip\"|tel|contact|recipient|customer|user|"
    r"forward|ipv|note|comment|first|last|given|family|initials|anonymous|visitor|member|fax)"
)
_ENCODED_AT = re.compile(r"%(?:25)*40", re.IGNORECASE)
# A phone number in free text in international form (a plus, then nine digits or more,
# spaces, dots, dashes, slashes and brackets between them); not inside a word. At most
# 40 characters a run: each start is read a bounded number of times (linear).
_DIGIT_RUN = re.compile(r"(?<![\w+])\+\d[\d .()/-]{7,40}\d(?![\w:])")
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w.])")
# An id's key (``id``, ``order_id``, ``orderId``, ``IDs``; not ``said``): its digits are
# an id, not a phone, and are kept.
_ID_KEY = re.compile(r"(?:^|[_\-\s.])[iI][dD][sS]?$|(?<=[a-z0-9])I[dD]s?$")
# What makes an event id or type worth a look: an address or a digit run.
_SUSPECT_TEXT = r"@|%40|\+\d"


def _normal(key: str) -> str:
    return re.sub(r"[-_\s]", "", key).lower()


def _words(key: str) -> frozenset[str]:
    return frozenset(word.lower() for word in _WORD.findall(key))


def _personal(key: str) -> bool:
    normal, words = _normal(key), _words(key)
    return (
        normal in _PERSONAL_KEYS
        or normal.endswith("ip")
        or any(part in normal for part in _PERSONAL_PARTS)
        or bool(words & _PHONE_WORDS)
        or (bool(words & _PERSON_WORDS) and (len(words) == 1 or bool(words & _ID_WORDS)))
    )


def _contact_kind(key: str) -> str | None:
    normal = _normal(key)
    if "phone" in normal or "mobile" in normal or _words(key) & _PHONE_WORDS:
        return "phone"
    if "mail" in normal:
        return "email"
    return "contact" if "contact" in normal else None


def _digits(run: str) -> int:
    return sum(ch.isdigit() for ch in run)


class Pseudonymiser:
    def __init__(self, key: bytes) -> None:
        self._digests = Tombstones(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> Pseudonymiser:
        return cls(settings.export_pseudonym_key())

    def _hashed(self, array: pa.Array, digest: Callable[[str | None], str | None]) -> pa.Array:
        return pa.array([digest(v) for v in array.to_pylist()], type=pa.string())

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
        stored = self._digests.digester("phone")
        phones = [
            None
            if value is None
            else stored(value)
            if _E164.fullmatch(value)
            else self._digests.phone_digest(value)
            for value in batch.column("phone").to_pylist()
        ]
        return _replace(
            batch,
            email=self._hashed(batch.column("email"), self._digests.email_digest),
            phone=pa.array(phones, type=pa.string()),
        )

    def _identities(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        sources = batch.column("source").to_pylist()
        ids = batch.column("external_id").to_pylist()
        # As ``Tombstones.digests`` keys a source id.
        digest = self._digests.digester("id")
        hashed = [
            None if i is None else digest(f"{s}:{i}") for s, i in zip(sources, ids, strict=True)
        ]
        return _replace(batch, external_id=pa.array(hashed, type=pa.string()))

    def _contact(self, kind: str | None, value: object) -> str | None:
        """The digest of an e-mail or phone; None for anything else (to be dropped)."""
        if not isinstance(value, str):
            return None
        if kind == "phone":
            return self._digests.phone_digest(value)
        if kind == "email":
            return self._digests.email_digest(value)
        if kind == "contact":  # either: whichever it is
            return self._digests.email_digest(value) or self._digests.phone_digest(value)
        return None

    def _attributes(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        names = batch.column("name").to_pylist()
        values = batch.column("value").to_pylist()
        out: list[str | None] = []
        for name, value in zip(names, values, strict=True):
            if value is None or name in HARMLESS_ATTRIBUTES:
                out.append(value)
            elif name in _HASHED_ATTRIBUTES:
                out.append(self._contact(name, value))
            else:
                out.append(None)
        return _replace(batch, value=pa.array(out, type=pa.string()))

    def _events(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        columns: dict[str, pa.Array] = {}
        properties = batch.column("properties")
        suspect = pc.fill_null(pc.match_substring_regex(properties, _SUSPECT), False)
        if pc.any(suspect).as_py():
            values = properties.to_pylist()
            for index in pc.indices_nonzero(suspect).to_pylist():
                values[index] = orjson.dumps(self._scrub(orjson.loads(values[index]))).decode()
            columns["properties"] = pa.array(values, type=pa.string())
        for name, scrub in (("type", self._text), ("event_id", self._digests.digester("event"))):
            if name not in batch.schema.names:
                continue
            column = batch.column(name)
            found = pc.fill_null(pc.match_substring_regex(column, _SUSPECT_TEXT), False)
            if pc.any(found).as_py():
                values = column.to_pylist()
                for index in pc.indices_nonzero(found).to_pylist():
                    values[index] = scrub(values[index])
                columns[name] = pa.array(values, type=pa.string())
        return _replace(batch, **columns) if columns else batch

    def _scrub(self, value: Any, id_like: bool = False) -> Any:
        if isinstance(value, dict):
            kept: dict[str, Any] = {}
            for key, item in value.items():
                if not _personal(str(key)):
                    kept[key] = self._scrub(item, bool(_ID_KEY.search(str(key))))
                elif (hashed := self._contact(_contact_kind(str(key)), item)) is not None:
                    kept[key] = hashed
            return kept
        if isinstance(value, list):
            return [self._scrub(item, id_like) for item in value]
        if isinstance(value, str):
            return self._text(value, id_like)
        return value

    def _text(self, value: str, id_like: bool = False) -> str:
        """A string with every e-mail hashed, every IPv4 address dropped and (unless it
        is an id's) every phone number in international form hashed."""
        if _ENCODED_AT.search(value):
            value = _decoded(value)  # then scrubbed as if it had been sent plain
        if "@" in value:
            # What the pattern takes for an address but is none: dropped, not kept.
            value = _EMAIL.sub(lambda m: self._digests.email_digest(m.group(0)) or "", value)
        if not id_like and _IPV4.search(value):
            value = _IPV4.sub("", value)
        if not id_like and _DIGIT_RUN.search(value):
            value = _DIGIT_RUN.sub(self._phone_run, value)
        return value

    def _phone_run(self, match: re.Match[str]) -> str:
        run = match.group(0)
        if _digits(run) < 9:
            return run  # too short for anyone's line
        return self._digests.phone_digest(run) or run  # no number: left as it was


def _decoded(value: str) -> str:
    """``value`` percent-decoded until no encoded ``@`` is left (``%2540`` is one encoded
    twice), a few rounds at most."""
    for _ in range(4):
        if not _ENCODED_AT.search(value):
            break
        value = unquote(value)
    return value


def _replace(batch: pa.RecordBatch, **columns: pa.Array) -> pa.RecordBatch:
    arrays = [columns.get(name, batch.column(name)) for name in batch.schema.names]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
