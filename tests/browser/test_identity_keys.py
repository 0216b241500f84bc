"""A participant takes their key into the browser and signs every decision with it."""

import hashlib

import pytest
from playwright.sync_api import expect

from consent_portal import demo
from consent_portal.models import Participant, Rejoin, Withdrawal
from identity import didkit_backend, jwt
from identity.models import DidKey
from tests.ledger import read

pytestmark = pytest.mark.browser

PASSWORD = "a long browser password 8"


def sign_up_and_hold_a_key(page, username):
    """Sign up (custodial), then create a key in this browser on the My keys page."""
    page.goto("/signup/")
    page.fill("#id_username", username)
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("button[type=submit]")
    custodial_did = Participant.objects.get(user__username=username).did

    page.click("text=My keys")
    expect(page.get_by_test_id("custody")).to_contain_text("The portal holds a key for you")
    expect(page.get_by_test_id("did-qr").locator("svg")).to_be_visible()
    page.fill("input[name=label]", "test laptop")
    page.fill("form[data-register-key] input[name=password]", PASSWORD)
    page.get_by_role("button", name="Create a key in this browser").click()
    expect(page.locator(".messages")).to_contain_text("This browser now holds a key")
    expect(page.get_by_test_id("custody")).to_contain_text("You hold your own key")
    expect(page.get_by_test_id("did")).to_contain_text("did:key:zDn")
    return custodial_did


def test_browser_held_key_signs_every_decision(page, screenshot):
    demo.purposes_load()
    custodial_did = sign_up_and_hold_a_key(page, "key-holder")
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
    # Each decision: its button, then the page that says what it does, signed on confirming.
    row.get_by_role("link", name="Grant").click()
    expect(page.get_by_test_id("signing-note")).to_be_visible()
    page.get_by_test_id("confirm").click()
    expect(page.locator(".messages")).to_contain_text("You granted consent")
    row.get_by_role("link", name="Suspend").click()
    page.get_by_test_id("confirm").click()
    expect(row.get_by_test_id("state")).to_have_text("suspended")
    row.get_by_role("link", name="Resume").click()
    page.get_by_test_id("confirm").click()
    expect(row.get_by_test_id("state")).to_have_text("granted")
    row.get_by_role("link", name="Revoke").click()
    page.get_by_test_id("confirm").click()
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
    kinds = read.kinds()
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
    page.get_by_test_id("request").get_by_test_id("yes-standing").click()
    page.get_by_test_id("confirm").click()
    expect(page.locator(".messages")).to_contain_text("your consent is granted")
    grant = participant.consents.get(purpose__slug="health-medical-research").events.get()
    assert grant.signed_by == "participant-key" and jwt.claims(grant.decision_jwt)["iss"] == participant.did


def test_browser_held_key_signs_a_withdrawal(page, browser, live_server, screenshot):
    demo.purposes_load()
    sign_up_and_hold_a_key(page, "withdrawer")
    participant = Participant.objects.get(user__username="withdrawer")
    page.click("text=My consents")
    page.locator("tr[data-purpose=general-research]").get_by_role("link", name="Grant").click()
    page.get_by_test_id("confirm").click()
    expect(page.locator(".messages")).to_contain_text("You granted consent")

    page.click("text=Withdraw")
    page.check("input[value=no_access]")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_test_id("signing-note")).to_be_visible()
    page.get_by_test_id("confirm").click()
    expect(page.locator(".messages")).to_contain_text("No further access")
    expect(page.get_by_test_id("withdrawal").get_by_test_id("signed-by")).to_have_text("participant-key")
    screenshot("identity-signed-withdrawal")

    # The revocation the withdrawal caused shows the participant's signature in the history.
    page.click("text=History")
    events = page.get_by_test_id("event")
    expect(events).to_have_count(2)
    expect(events.nth(0)).to_contain_text("revoke")
    expect(events.nth(0)).to_contain_text("participant-key")

    withdrawal = Withdrawal.objects.get(participant=participant)
    assert (withdrawal.level, withdrawal.signed_by) == ("no_access", "participant-key")
    token = withdrawal.decision_jwt
    claims = jwt.claims(token)
    assert jwt.header(token)["alg"] == "ES256" and claims["iss"] == participant.did
    assert claims["decision"] == {**claims["decision"], "type": "WithdrawalDecision", "level": "no_access",
                                  "participant": participant.did}
    assert didkit_backend.verify_presentation(token, challenge=claims["nonce"], domain=claims["aud"])["errors"] == []
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert read.opened(withdrawal.ledger_entry)["decision_sha256"] == digest
    revoke = participant.consents.get().events.get(action="revoke")
    assert (revoke.signed_by, revoke.decision_jwt) == ("participant-key", token)
    assert read.opened(revoke.ledger_entry)["decision_sha256"] == digest

    # A browser without the participant's key cannot withdraw for them, logged in or not.
    other = browser.new_context(base_url=live_server.url)
    try:
        elsewhere = other.new_page()
        elsewhere.goto("/login/")
        elsewhere.fill("#id_username", "withdrawer")
        elsewhere.fill("#id_password", PASSWORD)
        elsewhere.click("button[type=submit]")
        elsewhere.click("text=Withdraw")
        elsewhere.check("input[value=no_use]")
        elsewhere.get_by_role("button", name="Continue").click()
        elsewhere.get_by_test_id("confirm").click()
        expect(elsewhere.locator(".sign-error")).to_contain_text("holds none of your registered keys")
    finally:
        other.close()
    assert Withdrawal.objects.filter(participant=participant).count() == 1

    # Rejoining is signed in the browser that holds the key, like the withdrawal it ends.
    page.goto("/portal/rejoin/")
    expect(page.get_by_test_id("signing-note")).to_be_visible()
    page.check("input[name=confirm]")
    page.get_by_test_id("confirm").click()
    expect(page.locator(".messages")).to_contain_text("Welcome back")
    rejoin = Rejoin.objects.get(participant=participant)
    assert (rejoin.ended_level, rejoin.signed_by) == ("no_access", "participant-key")
    claims = jwt.claims(rejoin.decision_jwt)
    assert claims["decision"]["type"] == "RejoinDecision" and claims["iss"] == participant.did
    assert didkit_backend.verify_presentation(
        rejoin.decision_jwt, challenge=claims["nonce"], domain=claims["aud"])["errors"] == []
    digest = hashlib.sha256(rejoin.decision_jwt.encode()).hexdigest()
    assert read.opened(rejoin.ledger_entry)["decision_sha256"] == digest
