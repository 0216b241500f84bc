"""A participant takes their key into the browser and signs every decision with it."""

import pytest
from playwright.sync_api import expect

from consent_portal import demo
from consent_portal.models import Participant
from identity import didkit_backend, jwt
from identity.models import DidKey
from ledger.models import Entry

pytestmark = pytest.mark.browser

PASSWORD = "a long browser password 8"


def test_browser_held_key_signs_every_decision(page, screenshot):
    demo.purposes_load()
    page.goto("/signup/")
    page.fill("#id_username", "key-holder")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("button[type=submit]")
    custodial_did = Participant.objects.get(user__username="key-holder").did

    page.click("text=My keys")
    expect(page.get_by_test_id("custody")).to_contain_text("The portal holds a key for you")
    expect(page.get_by_test_id("did-qr").locator("svg")).to_be_visible()
    page.fill("input[name=label]", "test laptop")
    page.fill("form[data-register-key] input[name=password]", PASSWORD)
    page.get_by_role("button", name="Create a key in this browser").click()
    expect(page.locator(".messages")).to_contain_text("This browser now holds a key")
    expect(page.get_by_test_id("custody")).to_contain_text("You hold your own key")
    expect(page.get_by_test_id("did")).to_contain_text("did:key:zDn")
    screenshot("identity-keys")

    participant = Participant.objects.get(user__username="key-holder")
    assert participant.key_custody == "participant" and participant.did.startswith("did:key:zDn")
    # The portal's key for this participant is retired and its private part erased.
    custodial = DidKey.objects.get(did=custodial_did)
    assert custodial.retired_at is not None and custodial.encrypted_jwk == ""
    # The private key never left the browser: nothing of it is on the server.
    assert DidKey.objects.get(did=participant.did).encrypted_jwk == ""
    extractable = page.evaluate(
        """async (did) => (await window.consentKeys.findKey([did])).privateKey.extractable""",
        participant.did,
    )
    assert extractable is False

    page.click("text=My consents")
    expect(page.get_by_test_id("signing-note")).to_be_visible()
    row = page.locator("tr[data-purpose=general-research]")
    row.get_by_role("button", name="Grant").click()
    expect(page.locator(".messages")).to_contain_text("You granted consent")
    row.get_by_role("button", name="Suspend").click()
    expect(row.get_by_test_id("state")).to_have_text("suspended")
    row.get_by_role("button", name="Resume").click()
    expect(row.get_by_test_id("state")).to_have_text("granted")
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator(".messages")).to_contain_text("now revoked")
    screenshot("identity-signed-consents")

    events = list(participant.consents.get().events.order_by("created_at"))
    assert [e.action for e in events] == ["grant", "suspend", "resume", "revoke"]
    for event in events:
        assert event.signed_by == "participant-key"
        claims = jwt.claims(event.decision_jwt)
        assert jwt.header(event.decision_jwt)["alg"] == "ES256"
        assert claims["iss"] == participant.did
        assert claims["decision"]["action"] == event.action
        # didkit verifies the browser's signature independently of the portal's records.
        result = didkit_backend.verify_presentation(
            event.decision_jwt, challenge=claims["nonce"], domain=claims["aud"]
        )
        assert result["errors"] == [] and "JWS" in result["checks"]
    kinds = list(Entry.objects.order_by("id").values_list("kind", flat=True))
    assert "participant.key_added" in kinds and "participant.key_retired" in kinds

    # A study's request is answered the same way: the grant is signed in this browser.
    # (The revoked general-research consent covers HMB, so the approval itself would not
    # ask this participant again; the request is made directly.)
    from consent_portal import services
    from consent_portal.models import ConsentRequest, Purpose

    study = services.study_submit(identifier="heart-2026", title="Heart study", institution="U",
                                  commercial=False, uses=[{"permission": "DUO:0000006"}])
    ConsentRequest.objects.create(use=study.uses.get(), participant=participant,
                                  purpose=Purpose.objects.get(slug="health-medical-research"))
    page.click("text=Requests")
    page.get_by_test_id("request").get_by_role("button", name="Grant").click()
    expect(page.locator(".messages")).to_contain_text("your consent is granted")
    grant = participant.consents.get(purpose__slug="health-medical-research").events.get()
    assert grant.signed_by == "participant-key" and jwt.claims(grant.decision_jwt)["iss"] == participant.did
