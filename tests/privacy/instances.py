"""What the consent, erasure, export and audit-log tests share: their queries, a running
instance's handle, and people of each test's own from the seeded population.
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select
from starlette.applications import Starlette

from demo.people.population import Person
from demo.upstreams.runner import SampleUpstreams
from gateway.db.engine import create_engine
from tests.gql_client import gql

BASE = "http://gw"


BEHAVIOUR = (
    "query($email: String!) { customer(email: $email) { id consent { personalisation } "
    "recentEvents { type } cart { subtotal } engagement { pageViews30d sessions30d } } }"
)


CONSENTS = (
    "query($id: ID!) { customer(id: $id) { suppressed consent { emailMarketing "
    "personalisation analytics } consents { purpose granted source recordedAt } } }"
)


SET_CONSENT = (
    "mutation($id: ID!, $purpose: ConsentPurpose!, $granted: Boolean!, $source: String!) "
    "{ setConsent(customerId: $id, purpose: $purpose, granted: $granted, source: $source) "
    "{ purpose granted source recordedAt } }"
)


FORGET = (
    "mutation($id: ID!) { forgetCustomer(id: $id) "
    "{ customerId identities attributes events consents tombstones } }"
)


PERSONAL = "{% if recent_events.size > 0 %}personal{% else %}generic{% endif %}"


class Instance:
    """One running gateway and a client holding a key whose name is known."""

    def __init__(self, app: Starlette, http: httpx.AsyncClient, key_name: str) -> None:
        self.app, self.http, self.key_name = app, http, key_name

    async def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        return await gql(self.http, query, **variables)


# Each test takes people of its own from the seeded population, so tests that change
# or erase someone never meet: indices are handed out once per seeded database.
_TAKEN: dict[str, set[int]] = {}


def person_for(
    samples: SampleUpstreams, url: str, *, real_domain: bool = False, **wanted: bool
) -> Person:
    """A seeded person with these consents; ``real_domain``: an address the identity
    rules take as one (not a placeholder such as ``@inbox.example``)."""
    taken = _TAKEN.setdefault(url, set())
    for index, person in enumerate(samples.people):
        if index in taken or index < 50:  # the first 50 are other suites' favourites
            continue
        if real_domain and person.email.endswith(".example"):
            continue
        if all(getattr(person, f"{name}_consent") == value for name, value in wanted.items()):
            taken.add(index)
            return person
    raise AssertionError(f"no seeded person left with {wanted}")


async def with_events(gw: Instance, samples: SampleUpstreams, url: str) -> tuple[Person, Any]:
    """A seeded person with personalisation consent and some recent events."""
    for _ in range(20):
        person = person_for(samples, url, personalisation=True)
        found = (await gw.gql(BEHAVIOUR, email=person.email))["data"]["customer"]
        if found["recentEvents"]:
            return person, found
    raise AssertionError("no consenting seeded person has events")


async def count_rows(url: str, model: type) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return int(await connection.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        await engine.dispose()
