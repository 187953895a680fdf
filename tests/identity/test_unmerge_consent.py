"""An unmerge hands the split-off customer the consent statements made for its own
identity, and takes them from the survivor; a grant whose owner cannot be told goes to
nobody (gateway/identity/consent_split.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.privacy.consent import Purpose, state_many, withdraw_many
from gateway.services import Services
from tests.conftest import unique_email
from tests.identity.test_merge_api import MERGE, UNMERGE, _customer, run, services

__all__ = ["services"]  # the fixture, shared with the merge API's tests

SET_CONSENT = """mutation($id: ID!, $purpose: ConsentPurpose!, $granted: Boolean!, $source: String!)
{ setConsent(customerId: $id, purpose: $purpose, granted: $granted, source: $source) {
  granted
} }"""
CONSENTS = """query($id: ID!) { customer(id: $id) {
  suppressed
  consents { purpose granted source }
  consentHistory { purpose granted source }
} }"""


async def _say(services: Services, customer: str, purpose: str, granted: bool, source: str) -> None:
    answer = await run(
        services, SET_CONSENT, id=customer, purpose=purpose, granted=granted, source=source
    )
    assert "errors" not in answer, answer


async def _consents(services: Services, customer: str) -> dict[str, Any]:
    answer = await run(services, CONSENTS, id=customer)
    assert "errors" not in answer, answer
    found: dict[str, Any] = answer["data"]["customer"]
    return found


async def _merged_pair(services: Services, tag: str) -> tuple[str, str, str]:
    a, _ = await _customer(services, "crm", email=unique_email(f"{tag}-a"))
    b, ext_b = await _customer(services, "shop", email=unique_email(f"{tag}-b"))
    await _say(services, a, "ANALYTICS", True, "crm-banner")
    await _say(services, b, "EMAIL_MARKETING", True, "shop-signup")
    merged = await run(services, MERGE, into=a, **{"from": b}, reason="same person?")
    assert "errors" not in merged, merged
    return a, b, ext_b


async def test_the_split_off_customer_takes_its_own_consent_and_history(
    services: Services,
) -> None:
    a, _, ext_b = await _merged_pair(services, "split")
    assert not (await _consents(services, a))["suppressed"]  # b's grant, while merged
    split = await run(services, UNMERGE, source="shop", externalId=ext_b)
    assert "errors" not in split, split
    new = await _consents(services, split["data"]["unmergeCustomer"]["id"])
    kept = await _consents(services, a)
    assert kept["consents"] == [{"purpose": "ANALYTICS", "granted": True, "source": "crm-banner"}]
    assert kept["suppressed"]  # nobody at a ever agreed to marketing
    assert [h["source"] for h in kept["consentHistory"]] == ["crm-banner"]
    assert new["consents"] == [
        {"purpose": "EMAIL_MARKETING", "granted": True, "source": "shop-signup"}
    ]
    assert not new["suppressed"]
    assert [h["source"] for h in new["consentHistory"]] == ["shop-signup"]


async def test_a_grant_whose_owner_cannot_be_told_goes_to_nobody_split_off(
    services: Services,
) -> None:
    """After the merge the merged customer stated marketing consent again: either person
    may have said it, so the split-off customer does not keep its older grant, and the
    withdrawal made while merged counts for both."""
    a, _, ext_b = await _merged_pair(services, "unsure")
    await _say(services, a, "EMAIL_MARKETING", False, "esp-unsubscribe")
    split = await run(services, UNMERGE, source="shop", externalId=ext_b)
    assert "errors" not in split, split
    new = await _consents(services, split["data"]["unmergeCustomer"]["id"])
    kept = await _consents(services, a)
    # The withdrawal made while merged counts for both: either may have made it.
    assert new["suppressed"]
    assert [c for c in new["consents"] if c["purpose"] == "EMAIL_MARKETING"] == [
        {"purpose": "EMAIL_MARKETING", "granted": False, "source": "esp-unsubscribe"}
    ]
    assert [h["source"] for h in new["consentHistory"]] == ["esp-unsubscribe", "shop-signup"]
    marketing = [c for c in kept["consents"] if c["purpose"] == "EMAIL_MARKETING"]
    assert marketing == [
        {"purpose": "EMAIL_MARKETING", "granted": False, "source": "esp-unsubscribe"}
    ]


async def test_a_grant_made_while_merged_goes_to_nobody(services: Services) -> None:
    """The survivor said no; the merged customer said yes; after the unmerge that yes
    may have been either person's, so the survivor's own no is current again."""
    a, _ = await _customer(services, "crm", email=unique_email("merged-yes-a"))
    b, ext_b = await _customer(services, "shop", email=unique_email("merged-yes-b"))
    await _say(services, a, "EMAIL_MARKETING", False, "a-said-no")
    merged = await run(services, MERGE, into=a, **{"from": b}, reason="same person?")
    assert "errors" not in merged, merged
    await _say(services, a, "EMAIL_MARKETING", True, "granted-while-merged")
    assert not (await _consents(services, a))["suppressed"]
    split = await run(services, UNMERGE, source="shop", externalId=ext_b)
    assert "errors" not in split, split
    new = await _consents(services, split["data"]["unmergeCustomer"]["id"])
    kept = await _consents(services, a)
    assert kept["suppressed"]
    assert kept["consents"] == [
        {"purpose": "EMAIL_MARKETING", "granted": False, "source": "a-said-no"}
    ]
    # The history keeps the grant, for the steward to read.
    assert [h["source"] for h in kept["consentHistory"]] == ["granted-while-merged", "a-said-no"]
    assert new["suppressed"]
    assert new["consents"] == []


async def test_a_grant_made_while_merged_leaves_a_survivor_without_a_statement_unconsented(
    services: Services,
) -> None:
    a, _ = await _customer(services, "crm", email=unique_email("merged-only-a"))
    b, ext_b = await _customer(services, "shop", email=unique_email("merged-only-b"))
    merged = await run(services, MERGE, into=a, **{"from": b}, reason="same person?")
    assert "errors" not in merged, merged
    await _say(services, a, "EMAIL_MARKETING", True, "granted-while-merged")
    split = await run(services, UNMERGE, source="shop", externalId=ext_b)
    assert "errors" not in split, split
    kept = await _consents(services, a)
    assert kept["suppressed"]
    assert kept["consents"] == []


async def test_an_esp_withdrawal_before_the_merge_goes_with_its_customer(
    services: Services,
) -> None:
    """An ESP unsubscribe (withdraw_many) names the identity of a one-identity customer,
    as a statement through the API does: an unmerge hands it back to that customer."""
    a, _ = await _customer(services, "crm", email=unique_email("esp-a"))
    b, ext_b = await _customer(services, "shop", email=unique_email("esp-b"))
    await _say(services, a, "EMAIL_MARKETING", True, "a-signup")
    async with services.engine.begin() as connection:
        await withdraw_many(connection, Purpose.EMAIL_MARKETING, {uuid.UUID(b): "esp-unsub"})
    merged = await run(services, MERGE, into=a, **{"from": b}, reason="same person?")
    assert "errors" not in merged, merged
    assert (await _consents(services, a))["suppressed"]  # b's newer no, while merged
    split = await run(services, UNMERGE, source="shop", externalId=ext_b)
    assert "errors" not in split, split
    new = await _consents(services, split["data"]["unmergeCustomer"]["id"])
    kept = await _consents(services, a)
    assert not kept["suppressed"]
    assert [h["source"] for h in kept["consentHistory"]] == ["a-signup"]
    assert new["suppressed"]
    assert [h["source"] for h in new["consentHistory"]] == ["esp-unsub"]


async def test_a_shop_customer_split_from_one_without_identities_keeps_its_no(
    services: Services,
) -> None:
    upsert = "mutation($email: String!) { upsertCustomer(input: {email: $email}) { id } }"
    created = await run(services, upsert, email=unique_email("bare-a"))
    assert "errors" not in created, created
    a = created["data"]["upsertCustomer"]["id"]
    b, ext_b = await _customer(services, "shop", email=unique_email("bare-b"))
    await _say(services, b, "EMAIL_MARKETING", False, "b-said-no")
    merged = await run(services, MERGE, into=a, **{"from": b}, reason="same person?")
    assert "errors" not in merged, merged
    await _say(services, a, "EMAIL_MARKETING", True, "granted-while-merged")
    split = await run(services, UNMERGE, source="shop", externalId=ext_b)
    assert "errors" not in split, split
    new = await _consents(services, split["data"]["unmergeCustomer"]["id"])
    kept = await _consents(services, a)
    assert new["suppressed"]
    assert new["consents"] == [
        {"purpose": "EMAIL_MARKETING", "granted": False, "source": "b-said-no"}
    ]
    assert kept["suppressed"]
    assert kept["consents"] == []


@pytest.mark.parametrize(
    "withdrawn_into", [True, False], ids=["survivor-withdrew", "merged-in-withdrew"]
)
async def test_of_a_grant_and_a_withdrawal_made_at_the_same_instant_the_withdrawal_survives_a_merge(
    services: Services, withdrawn_into: bool
) -> None:
    # An outside check (code reading): the survivor's statement won a tie, so a grant
    # beat a withdrawal of the same instant when the grant was the survivor's.
    a, _ = await _customer(services, "crm", email=unique_email("tie-a"))
    b, _ = await _customer(services, "shop", email=unique_email("tie-b"))
    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    said, withdrew = (b, a) if withdrawn_into else (a, b)
    async with services.engine.begin() as connection:
        await state_many(
            connection,
            Purpose.EMAIL_MARKETING,
            True,
            {uuid.UUID(said): "crm"},
            {uuid.UUID(said): at},
        )
        await withdraw_many(
            connection,
            Purpose.EMAIL_MARKETING,
            {uuid.UUID(withdrew): "esp"},
            {uuid.UUID(withdrew): at},
        )
    merged = await run(services, MERGE, into=a, **{"from": b}, reason="same person")
    assert "errors" not in merged, merged
    assert (await _consents(services, a))["suppressed"] is True
