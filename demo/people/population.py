"""The synthetic people behind the demo database and every sample upstream.

One deterministic population (same seed, same people, on every run and every
machine with the same Faker release) so that a customer seeded into the
gateway's database is the same person the sample CRM, commerce and analytics
services know, under each system's own ids.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

import phonenumbers
from faker import Faker

DEFAULT_SEED = 20261123
DEFAULT_SIZE = 1000

# Reserved example domains (RFC 2606/6761): realistic shapes, nobody's inbox.
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "inbox.example")
_LOCALES = (
    ("en_US", "en-US", "US"),
    ("en_GB", "en-GB", "GB"),
    ("de_DE", "de-DE", "DE"),
    ("fr_FR", "fr-FR", "FR"),
    ("es_ES", "es-ES", "ES"),
    ("nl_NL", "nl-NL", "NL"),
)
_LIFECYCLE_STAGES = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
)
_OWNER_IDS = ("41629779", "41629780", "52201311", "60017342", "71230055")
# Names the demo's anchor for a process and the processes it starts (ISO date or time).
EPOCH_ENV = "GATEWAY_DEMO_EPOCH"


def parse_epoch(text: str) -> datetime:
    """An anchor as ``GATEWAY_DEMO_EPOCH`` or ``--epoch`` give it: an ISO date (its
    midnight, UTC) or date and time (UTC unless it names its offset)."""
    moment = datetime.fromisoformat(text.strip())
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@functools.cache
def demo_epoch() -> datetime:
    """The present the demo's data is anchored to: ``GATEWAY_DEMO_EPOCH`` if set, else the
    start of the current UTC day. Read once per process: a demo running across midnight
    keeps one timeline (a fixed date made the data look a month stale a month later; the
    scores judge it against the clock). Processes that generate the same people separately
    pass it on (``--epoch``, the variable) so that they agree."""
    if text := os.environ.get(EPOCH_ENV, "").strip():
        return parse_epoch(text)
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Person:
    """One synthetic person, with the id each upstream system knows them by."""

    index: int
    hubspot_id: str
    shopify_id: int
    segment_user_id: str
    email: str
    first_name: str
    last_name: str
    phone: str
    company: str
    job_title: str
    city: str
    country: str
    locale: str
    date_of_birth: date
    lifecycle_stage: str
    owner_id: str
    created_at: datetime
    updated_at: datetime
    email_marketing_consent: bool
    personalisation_consent: bool
    analytics_consent: bool
    # The anchor every date of theirs (orders, events included) counts back from.
    epoch: datetime

    def rng(self, purpose: str) -> random.Random:
        """A generator private to this person and purpose: adding a purpose never
        changes the data another purpose derived before."""
        return random.Random(f"{DEFAULT_SEED}:{self.index}:{purpose}")


def _ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _phone(fake: Faker, country: str, index: int) -> str:
    # Faker's numbers are only sometimes valid; retry a few, then fall back to a
    # number that is valid by construction, so every phone normalises to E.164.
    for _ in range(8):
        try:
            number = phonenumbers.parse(fake.phone_number(), country)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return f"+1212{2000000 + index:07d}"


def _person(index: int, fakers: dict[str, Faker], rng: random.Random, epoch: datetime) -> Person:
    faker_locale, locale, country = _LOCALES[rng.randrange(len(_LOCALES))]
    fake = fakers[faker_locale]
    first, last = fake.first_name(), fake.last_name()
    email = f"{_ascii_slug(first)}.{_ascii_slug(last)}{index}@{_DOMAINS[index % len(_DOMAINS)]}"
    created_at = epoch - timedelta(days=rng.randrange(30, 1500), seconds=rng.randrange(86400))
    updated_at = min(epoch, created_at + timedelta(days=rng.randrange(0, 400)))
    digest = hashlib.sha256(f"segment:{index}".encode()).hexdigest()[:20]
    return Person(
        index=index,
        hubspot_id=str(51_000_000 + index * 7),
        shopify_id=7_300_000_000_000 + index * 13,
        segment_user_id=f"usr_{digest}",
        email=email,
        first_name=first,
        last_name=last,
        phone=_phone(fake, country, index),
        company=fake.company(),
        job_title=fake.job(),
        city=fake.city(),
        country=country,
        locale=locale,
        # Not Faker's date_of_birth: it counts back from today, so it drifts daily.
        date_of_birth=(epoch - timedelta(days=rng.randrange(18 * 365, 85 * 365))).date(),
        lifecycle_stage=_LIFECYCLE_STAGES[rng.randrange(len(_LIFECYCLE_STAGES))],
        owner_id=_OWNER_IDS[rng.randrange(len(_OWNER_IDS))],
        created_at=created_at,
        updated_at=updated_at,
        email_marketing_consent=rng.random() < 0.85,
        personalisation_consent=rng.random() < 0.8,
        analytics_consent=rng.random() < 0.75,
        epoch=epoch,
    )


def population(
    size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED, epoch: datetime | None = None
) -> tuple[Person, ...]:
    """The first ``size`` people of the population, dated back from ``epoch`` (default
    ``demo_epoch()``); a prefix of any larger one with the same anchor."""
    return _population(size, seed, demo_epoch() if epoch is None else epoch)


@lru_cache(maxsize=4)
def _population(size: int, seed: int, epoch: datetime) -> tuple[Person, ...]:
    fakers = {}
    for faker_locale, _, _ in _LOCALES:
        fake = Faker(faker_locale)
        fake.seed_instance(seed)
        fakers[faker_locale] = fake
    people = []
    for index in range(size):
        # One seed per person keeps person i identical whatever the size asked for.
        rng = random.Random(f"{seed}:{index}")
        for fake in fakers.values():
            fake.seed_instance(f"{seed}:{index}")
        people.append(_person(index, fakers, rng, epoch))
    return tuple(people)
