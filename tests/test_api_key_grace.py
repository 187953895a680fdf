"""Which keys a process still accepts while the database is unreachable."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from gateway.access.api_key_grace import OutageGrace
from gateway.access.api_keys import Principal, Scope
from gateway.errors import DatabaseUnavailable

READER = Principal("k1", "reader", frozenset({Scope.PROFILES_READ}), None)


async def _all_active(hashes: Collection[str]) -> set[str]:
    return set(hashes)


async def test_a_key_verified_within_the_grace_period_is_accepted_and_not_after() -> None:
    grace = OutageGrace(300, 1, _all_active)
    grace.verified("h1", READER, started=1000.0)
    assert grace.during_outage("h1", now=1299.0) == READER
    with pytest.raises(DatabaseUnavailable):
        grace.during_outage("h1", now=1301.0)
    await grace.aclose()


async def test_a_key_never_verified_is_unavailable_and_one_known_revoked_refused() -> None:
    grace = OutageGrace(300, 1, _all_active)
    with pytest.raises(DatabaseUnavailable):
        grace.during_outage("never", now=0.0)
    grace.verified("h1", READER, started=10.0)
    grace.verified("h1", None, started=11.0)  # read again: no longer stored as active
    assert grace.refuses("h1")
    assert grace.during_outage("h1", now=12.0) is None
    grace.verified("h2", READER, started=10.0)
    grace.revoked_key(lambda principal: principal.key_id == "k1")  # revoked here, by id
    assert grace.during_outage("h2", now=12.0) is None
    await grace.aclose()


async def test_no_grace_refuses_every_key_during_an_outage() -> None:
    grace = OutageGrace(0, 1, _all_active)
    grace.verified("h1", READER, started=10.0)
    with pytest.raises(DatabaseUnavailable):
        grace.during_outage("h1", now=10.5)
    await grace.aclose()
