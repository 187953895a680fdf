"""Consent as a customer sees it: behaviour and personalised recommendations are served
only with personalisation consent, a withdrawal holds against later CRM edits,
``suppressed`` follows e-mail marketing consent, and concurrent statements leave one
current row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from demo.upstreams.runner import SampleUpstreams
from tests.conftest import (
    unique_email,
)
from tests.gql_client import error_codes
from tests.ingest.webhook_requests import (
    hubspot_change,
    hubspot_request,
)
from tests.privacy.instances import (
    BASE,
    BEHAVIOUR,
    CONSENTS,
    PERSONAL,
    SET_CONSENT,
    person_for,
    with_events,
)


async def test_behaviour_is_served_only_with_personalisation_consent(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    async with instance() as gw:
        refused = person_for(samples, privacy_url, personalisation=False)
        body = await gw.gql(BEHAVIOUR, email=refused.email)
        _, consenting = await with_events(gw, samples, privacy_url)
    assert "errors" not in body, body
    without = body["data"]["customer"]
    assert without["consent"] == {"personalisation": False}
    assert without["recentEvents"] == []
    assert without["cart"] is None
    assert without["engagement"] == {"pageViews30d": 0, "sessions30d": 0}
    assert consenting["consent"] == {"personalisation": True}
    assert consenting["recentEvents"]


async def test_set_consent_takes_effect_on_the_next_read(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    async with instance() as gw:
        person, before = await with_events(gw, samples, privacy_url)
        customer_id = before["id"]
        await gw.gql(BEHAVIOUR, email=person.email)  # cached now
        started = datetime.now(UTC) - timedelta(seconds=5)
        changed = await gw.gql(
            SET_CONSENT, id=customer_id, purpose="PERSONALISATION", granted=False, source="crm-form"
        )
        after = (await gw.gql(BEHAVIOUR, email=person.email))["data"]["customer"]
        statements = (await gw.gql(CONSENTS, id=customer_id))["data"]["customer"]
        await gw.gql(
            SET_CONSENT, id=customer_id, purpose="PERSONALISATION", granted=True, source="api"
        )
        again = (await gw.gql(BEHAVIOUR, email=person.email))["data"]["customer"]
    assert changed["data"]["setConsent"]["granted"] is False
    assert after["consent"] == {"personalisation": False}
    assert after["recentEvents"] == []
    assert after["cart"] is None
    assert after["engagement"] == {"pageViews30d": 0, "sessions30d": 0}
    (personalisation,) = [c for c in statements["consents"] if c["purpose"] == "PERSONALISATION"]
    assert personalisation["granted"] is False
    assert personalisation["source"] == "crm-form"
    recorded = datetime.fromisoformat(personalisation["recordedAt"])
    assert recorded.tzinfo is not None
    assert recorded >= started
    assert personalisation["recordedAt"] == changed["data"]["setConsent"]["recordedAt"]
    # Consent given again: behaviour comes back, the same as before.
    assert again["recentEvents"] == before["recentEvents"]


async def test_withdrawn_consent_stops_personalised_recommendations_at_once(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    recs = "query($id: ID!) { customer(id: $id) { recommendations(limit: 8) { id reason } } }"
    behavioural = ("because you bought ", "because you viewed ")
    async with instance() as gw:
        for _ in range(20):
            person = person_for(samples, privacy_url, personalisation=True)
            found = await gw.gql(
                "query($e: String!) { customer(email: $e) { id } }", e=person.email
            )
            customer_id = found["data"]["customer"]["id"]
            before = (await gw.gql(recs, id=customer_id))["data"]["customer"]["recommendations"]
            if any(r["reason"].startswith(behavioural) for r in before):
                break
        else:
            raise AssertionError("no consenting seeded person has personal recommendations")
        await gw.gql(
            SET_CONSENT, id=customer_id, purpose="PERSONALISATION", granted=False, source="api"
        )
        after = (await gw.gql(recs, id=customer_id))["data"]["customer"]["recommendations"]
    assert after, after
    assert not [r for r in after if r["reason"].startswith(behavioural)], after


async def test_a_later_crm_edit_does_not_undo_a_withdrawal(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    """The CRM dates a whole contact, not its consent: a sales rep editing a job title
    after the customer said no through the API is not the customer saying yes."""
    async with instance() as gw:
        person, before = await with_events(gw, samples, privacy_url)
        await gw.gql(
            SET_CONSENT, id=before["id"], purpose="PERSONALISATION", granted=False, source="api"
        )
        hubspot = samples.hubspot
        original = hubspot.people
        edited = dataclasses.replace(
            person, job_title="Head of Llamas", updated_at=datetime.now(UTC) + timedelta(seconds=1)
        )
        # A CRM edit: the sample answers reads from these (search, by id, by email).
        hubspot.people = [edited if p is person else p for p in original]
        hubspot._by_id[person.hubspot_id] = edited
        hubspot._by_email[person.email.lower()] = edited
        try:
            change = hubspot_change(int(person.hubspot_id), "jobtitle", "Head of Llamas")
            assert (await gw.http.post(**hubspot_request([change], BASE))).status_code == 200
            after = (await gw.gql(BEHAVIOUR, email=person.email))["data"]["customer"]
            title = await gw.gql(
                "query($e: String!) { customer(email: $e) { jobTitle } }", e=person.email
            )
        finally:
            hubspot.people = original
            hubspot._by_id[person.hubspot_id] = person
            hubspot._by_email[person.email.lower()] = person
    assert title["data"]["customer"]["jobTitle"] == "Head of Llamas"  # the edit was read
    assert after["consent"] == {"personalisation": False}
    assert after["recentEvents"] == []
    assert after["cart"] is None


async def test_suppressed_follows_email_marketing_consent(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    mailable = person_for(samples, privacy_url, email_marketing=True)
    unmailable = person_for(samples, privacy_url, email_marketing=False)
    async with instance() as gw:
        ids = {}
        for person in (mailable, unmailable):
            found = await gw.gql(
                "query($e: String!) { customer(email: $e) { id } }", e=person.email
            )
            ids[person.email] = found["data"]["customer"]["id"]
        first = (await gw.gql(CONSENTS, id=ids[mailable.email]))["data"]["customer"]
        second = (await gw.gql(CONSENTS, id=ids[unmailable.email]))["data"]["customer"]
        await gw.gql(
            SET_CONSENT,
            id=ids[mailable.email],
            purpose="EMAIL_MARKETING",
            granted=False,
            source="x",
        )
        now_suppressed = (await gw.gql(CONSENTS, id=ids[mailable.email]))["data"]["customer"]
        await gw.gql(
            SET_CONSENT,
            id=ids[unmailable.email],
            purpose="EMAIL_MARKETING",
            granted=True,
            source="x",
        )
        now_mailable = (await gw.gql(CONSENTS, id=ids[unmailable.email]))["data"]["customer"]
    assert (first["suppressed"], first["consent"]["emailMarketing"]) == (False, True)
    assert (second["suppressed"], second["consent"]["emailMarketing"]) == (True, False)
    assert (now_suppressed["suppressed"], now_suppressed["consent"]["emailMarketing"]) == (
        True,
        False,
    )
    assert (now_mailable["suppressed"], now_mailable["consent"]["emailMarketing"]) == (False, True)


async def test_a_customer_without_any_consent_is_not_granted(instance: Any) -> None:
    async with instance() as gw:
        email = unique_email("noconsent")
        created = await gw.gql(
            "mutation($e: String!) { upsertCustomer(input: {email: $e}) { id } }", e=email
        )
        customer_id = created["data"]["upsertCustomer"]["id"]
        found = (await gw.gql(CONSENTS, id=customer_id))["data"]["customer"]
        bad = await gw.gql(
            SET_CONSENT, id=str(uuid.uuid4()), purpose="ANALYTICS", granted=True, source="api"
        )
    assert found == {
        "suppressed": True,
        "consent": {"emailMarketing": None, "personalisation": None, "analytics": None},
        "consents": [],
    }
    assert error_codes(bad) == [("NOT_FOUND", ["setConsent"])]


async def test_concurrent_consent_statements_leave_one_current_row(instance: Any) -> None:
    """A preference centre submitted twice at once: both answered, one statement kept."""
    async with instance() as gw:
        created = await gw.gql(
            "mutation($e: String!) { upsertCustomer(input: {email: $e}) { id } }",
            e=unique_email("twice"),
        )
        customer_id = created["data"]["upsertCustomer"]["id"]
        answers = await asyncio.gather(
            *(
                gw.gql(
                    SET_CONSENT,
                    id=customer_id,
                    purpose="EMAIL_MARKETING",
                    granted=bool(n % 2),
                    source=f"form-{n}",
                )
                for n in range(6)
            )
        )
        found = (await gw.gql(CONSENTS, id=customer_id))["data"]["customer"]
    assert all("errors" not in a for a in answers), answers
    (statement,) = found["consents"]
    last = max(answers, key=lambda a: a["data"]["setConsent"]["recordedAt"])
    assert statement["source"] == last["data"]["setConsent"]["source"]


async def test_render_takes_the_generic_branch_without_consent(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    render = (
        "query($email: String!, $t: String!) { customer(email: $email) { id render(template: $t) "
        "{ body } } }"
    )
    async with instance() as gw:
        person, found = await with_events(gw, samples, privacy_url)
        with_consent = await gw.gql(render, email=person.email, t=PERSONAL)
        await gw.gql(
            SET_CONSENT, id=found["id"], purpose="PERSONALISATION", granted=False, source="api"
        )
        without = await gw.gql(render, email=person.email, t=PERSONAL)
        refused = person_for(samples, privacy_url, personalisation=False)
        never = await gw.gql(render, email=refused.email, t=PERSONAL)
    assert with_consent["data"]["customer"]["render"]["body"] == "personal", with_consent
    assert without["data"]["customer"]["render"]["body"] == "generic", without
    assert never["data"]["customer"]["render"]["body"] == "generic", never
