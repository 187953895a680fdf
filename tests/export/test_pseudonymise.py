"""A pseudonymised export holds no e-mail, phone, name or source id from the source data:
not in the decoded columns, not in the raw bytes (statistics, manifests), while the same
person keeps the same pseudonym so joins still work."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_sessionmaker
from gateway.export.pseudonymise import Pseudonymiser
from gateway.export.service import Exporter
from gateway.identity.merges import merge_customers
from gateway.privacy.tombstones import Tombstones
from gateway.profiles.contact_points import normalize_phone
from tests.export.people import Person, add_person

KEY = b"pseudonym-test-key-0123456789"


def _identifiers(person: Person) -> list[str]:
    e164 = normalize_phone(person.phone)
    return [
        person.email,
        person.email.split("@")[0],
        person.phone,
        e164,
        e164.lstrip("+"),
        person.first_name,
        person.last_name,
        person.external_id,
    ]


async def test_pseudonymised_files_hold_no_identifiers(engine: AsyncEngine, tmp_path: Path) -> None:
    people = [await add_person(engine) for _ in range(3)]
    out = tmp_path / "out"
    exporter = Exporter(engine, str(out), Pseudonymiser(KEY))
    await exporter.run()
    await add_person(engine)  # and an incremental run over a newcomer
    people.append(await add_person(engine))
    await exporter.run()

    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    decoded = "\n".join(
        json.dumps(pq.read_table(p).to_pylist(), default=str)
        for p in files
        if p.suffix == ".parquet"
    )
    raw = b"\n".join(p.read_bytes() for p in files)
    for person in people:
        for value in _identifiers(person):
            assert value not in decoded, value
            assert value.lower() not in decoded.lower(), value
            assert value.encode() not in raw, value

    # The same person, the same pseudonym, in every run: customers join with attributes.
    digests = Tombstones(KEY)
    customers = [
        row for p in out.glob("customers/**/*.parquet") for row in pq.read_table(p).to_pylist()
    ]
    by_id = {row["id"]: row for row in customers}
    for person in people:
        row = by_id[str(person.id)]
        assert row["email"] == digests.email_digest(person.email)
        assert "first_name" not in row
        assert "last_name" not in row
    attributes = [
        row
        for p in out.glob("attributes/**/*.parquet")
        for row in pq.read_table(p).to_pylist()
        if row["name"] == "email"
    ]
    assert {row["value"] for row in attributes} >= {by_id[str(p.id)]["email"] for p in people}


def _properties(pseudonymiser: Pseudonymiser, *rows: dict[str, object]) -> list[dict[str, object]]:
    batch = pa.RecordBatch.from_pydict(
        {
            "id": list(range(len(rows))),
            "properties": [orjson.dumps(r).decode() for r in rows],
        }
    )
    return [orjson.loads(p) for p in pseudonymiser.batch("events", batch)["properties"].to_pylist()]


def test_keys_that_name_a_person_anywhere_in_them_are_dropped_or_hashed() -> None:
    personal = {
        "shipping_phone": "+44 20 7946 0958",
        "customer_name": "Zqbrandt",
        "billing_address": "1 Zqstreet Road",
        "contactEmail": "Zq.Person@Example.org",
        "client_ip": "203.0.113.7",
        "postCode": "ZQ1 1AA",
        "date-of-birth": "1980-01-01",
    }
    (row,) = _properties(Pseudonymiser(KEY), {"order": {**personal, "sku": "A-1"}})
    text = json.dumps(row)
    for value in personal.values():
        assert value not in text
        assert value.lower() not in text.lower()
    digests = Tombstones(KEY)
    assert row["order"] == {
        "shipping_phone": digests.phone_digest("+442079460958"),
        "contactEmail": digests.email_digest("zq.person@example.org"),
        "sku": "A-1",
    }


def test_one_phone_in_two_spellings_gets_one_pseudonym_as_tombstones_make_it() -> None:
    pseudonymiser = Pseudonymiser(KEY)
    rows = _properties(pseudonymiser, {"phone": "+44 20 7946 0958"}, {"phone": "+442079460958"})
    # A customer's phone as stored (E.164), and one stored in another spelling.
    customers = pa.RecordBatch.from_pydict(
        {
            "email": ["Zq.Person@Example.org ", "zq.person@example.org"],
            "phone": ["+44 (0)20 7946-0958", "+442079460958"],
        }
    )
    hashed = pseudonymiser.batch("customers", customers).to_pylist()
    expected = Tombstones(KEY).phone_digest("+442079460958")
    assert [r["phone"] for r in rows] == [expected, expected]
    assert [h["phone"] for h in hashed] == [expected, expected]
    email = Tombstones(KEY).email_digest("zq.person@example.org")
    assert [h["email"] for h in hashed] == [email, email]


def test_an_address_percent_encoded_in_a_link_is_not_exported() -> None:
    # An ESP's click event keeps the link the recipient followed; unsubscribe and
    # tracking links often carry the recipient's address in their query string, encoded
    # (``%40`` for the ``@``): the plain-text pattern did not see it.
    links: list[dict[str, object]] = [
        {"url": "https://shop.example/unsubscribe?email=Zq.Person%40Example.org&list=1"},
        {"url": "https://shop.example/p/1?utm_term=zq.person%2Bnews%40example.org"},
        {"custom_args": {"send_id": "s-1", "to": "zq.person%2540example.org"}},
    ]
    rows = _properties(Pseudonymiser(KEY), *links)
    text = json.dumps(rows).lower()
    for local in ("zq.person", "zq.person%2bnews", "zq.person+news"):
        assert local not in text, text
    assert "example.org" not in text.replace('"', ""), text
    assert rows[2]["custom_args"]["send_id"] == "s-1"  # type: ignore[index]


async def test_an_operators_merge_reason_is_not_exported(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # ``mergeCustomers`` and the review queue keep the reason an operator typed, free
    # text that often names the person ("same as Zq… at old address …"): nothing in it
    # can be told apart from a product's name, so a pseudonymised export leaves it out.
    kept, folded = await add_person(engine), await add_person(engine)
    reason = f"Called in: {folded.last_name} is {kept.last_name}, {folded.email} was old"
    await merge_customers(create_sessionmaker(engine), kept.id, folded.id, reason)
    out = tmp_path / "out"
    await Exporter(engine, str(out), Pseudonymiser(KEY)).run()
    links = [
        row for p in out.glob("identity_links/**/*.parquet") for row in pq.read_table(p).to_pylist()
    ]
    assert any(row["rule"] == "manual" for row in links), links
    decoded = json.dumps(links, default=str)
    for value in (folded.last_name, kept.last_name, folded.email, "Called in"):
        assert value not in decoded, value

    raw = tmp_path / "raw"  # a raw export keeps it: it holds the names anyway
    await Exporter(engine, str(raw), None).run()
    raw_links = [
        r for p in raw.glob("identity_links/**/*.parquet") for r in pq.read_table(p).to_pylist()
    ]
    assert reason in {row["reason"] for row in raw_links}


ORDINARY = {
    "barcode": "4006381333931",
    "upc": "012345678905",
    "isbn": "978-3-16-148410-0",
    "sent_ms": "1733494704000",
    "price": "1234567.89",
    "url": "https://shop.example/products/7712345678901?variant=40123456789012",
    "path": "/orders/1234567890/status",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
    "cart_token": "c1-20241206123456789",
    "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
    "customer_type": "wholesale",
    "hotel": "Grand",
}


def test_contacts_names_and_addresses_in_free_text_do_not_reach_the_export() -> None:
    # An outside check sent these for a consenting customer: every value came out as
    # sent but the surname, and the event's type and id carried the address.
    properties = {
        "event": "Newsletter zq.person@example.org +33755219250",
        "properties": {
            "tel": "+33 7 55 21 92 50",
            "customer": "Zqcapucine Zqblin",
            "recipient": "Zqcapucine Zqblin",
            "contact": "+33755219250",
            "note": "call me on 07 55 21 92 50, I am Zqcapucine Zqblin",
            "ipv4": "81.2.69.160",
            "x_forwarded_for": "81.2.69.160",
            "first": "Zqcapucine",
            "last": "Zqblin",
            "user_id": "usr_025198d288ad0771190e",
            "comment": "ring 0755219250",
            # A fresh review: as whole keys only, these went out as sent.
            "telefon": "030 9182736",
            "tel_number": "06 12 34 56 78",
            "shopify_customer_id": "7300000000065",
            "hubspotUserId": "51000035",
            "customer_number": "C-000005",
            "seen_from": "81.2.69.160",
            "said": "my number is +33 7 55 21 92 50",
            "order_id": "4507894691234",
            "sku": "A-1",
            "when": "2026-12-06 10:00",
            **ORDINARY,
        },
    }
    batch = pa.RecordBatch.from_pydict(
        {
            "id": [1],
            "event_id": ["pii-3-zq.person@example.org"],
            "type": ["track:Newsletter zq.person@example.org +33755219250"],
            "properties": [orjson.dumps(properties).decode()],
        }
    )
    (row,) = Pseudonymiser(KEY).batch("events", batch).to_pylist()
    text = json.dumps(row).lower()
    for needle in (
        "zq",
        "755219",
        "55 21",
        "81.2.69",
        "usr_025198",
        "example.org",
        "9182736",
        "12 34 56",
        "7300000000065",
        "51000035",
        "C-000005",
    ):
        assert needle not in text, (needle, text)
    digests = Tombstones(KEY)
    phone = digests.phone_digest("+33755219250")
    assert phone is not None
    assert phone in row["type"]
    assert row["event_id"] == digests.digester("event")("pii-3-zq.person@example.org")
    kept = orjson.loads(row["properties"])["properties"]
    assert kept["contact"] == phone
    assert (kept["order_id"], kept["sku"], kept["when"]) == (
        "4507894691234",
        "A-1",
        "2026-12-06 10:00",
    )
    # A fresh review: digit runs were dropped wherever they stood, and "user", "customer"
    # and "tel" dropped every key holding them. Ordinary data is exported as it is.
    assert {key: kept[key] for key in ORDINARY} == ORDINARY
