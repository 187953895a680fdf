"""An unmerge hands the split-off customer the consent statements made for its own
identity, and takes them from the survivor; a grant whose owner cannot be told goes to
nobody (gateway/identity/consent_split.py)."""

from __future__ import annotations

from typing import Any

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
    statement made while merged stays with the survivor."""
    a, _, ext_b = await _merged_pair(services, "unsure")
    await _say(services, a, "EMAIL_MARKETING", False, "esp-unsubscribe")
    split = await run(services, UNMERGE, source="shop", externalId=ext_b)
    assert "errors" not in split, split
    new = await _consents(services, split["data"]["unmergeCustomer"]["id"])
    kept = await _consents(services, a)
    assert new["suppressed"]
    assert [c for c in new["consents"] if c["purpose"] == "EMAIL_MARKETING"] == []
    assert [h["source"] for h in new["consentHistory"]] == ["shop-signup"]
    marketing = [c for c in kept["consents"] if c["purpose"] == "EMAIL_MARKETING"]
    assert marketing == [
        {"purpose": "EMAIL_MARKETING", "granted": False, "source": "esp-unsubscribe"}
    ]
