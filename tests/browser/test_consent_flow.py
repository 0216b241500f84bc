"""A participant grants and then revokes a consent through the real pages."""

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from consent_portal import demo, services

pytestmark = pytest.mark.browser

PASSWORD = "a long browser password 7"


def test_sign_up_grant_and_revoke_in_chromium(page, screenshot, look):
    demo.purposes_load()
    page.goto("/signup/")
    page.fill("#id_username", "browser-participant")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_test_id("did")).to_contain_text("did:key:z6Mk")
    page.get_by_role("button", name="Get a donation code").click()
    expect(page.get_by_test_id("donation-code")).to_have_text(re.compile(r"^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}$"))
    assert look("overview-donation-code") == []

    page.click("text=My consents")
    row = page.locator("tr[data-purpose=general-research]")
    expect(row.get_by_test_id("state")).to_have_text("not granted")
    row.get_by_role("link", name="Grant").click()
    expect(page.get_by_test_id("purpose-allows")).to_contain_text("DUO:0000042")
    page.get_by_test_id("confirm").click()
    expect(page.locator(".messages")).to_contain_text("You granted consent")
    expect(row.get_by_test_id("state")).to_have_text("granted")
    screenshot("consents-granted")

    row.get_by_role("link", name="Revoke").click()
    expect(page.get_by_test_id("consequences")).to_contain_text("This is final.")
    page.get_by_test_id("confirm").click()
    expect(page.locator(".messages")).to_contain_text("now revoked")
    expect(row.get_by_test_id("state")).to_have_text("not granted")

    page.click("text=History")
    events = page.get_by_test_id("event")
    expect(events).to_have_count(2)
    expect(events.nth(0)).to_contain_text("revoke")
    expect(events.nth(1)).to_contain_text("grant")
    # Sealed in-process on commit: each event shows its ledger index.
    expect(events.nth(0).get_by_test_id("ledger-index")).to_contain_text(re.compile(r"^#\d+"))
    assert look("history") == []
    # The proof download opens the blinded entry: it commits to this participant.
    with page.expect_download() as download:
        events.nth(0).get_by_role("link", name=re.compile("^Download the proof of your revoke")).click()
    receipt = json.loads(Path(download.value.path()).read_text())
    assert set(receipt["openings"]) == {"participant", "credential", "decision_sha256"}

    participant = services.Participant.objects.get(user__username="browser-participant")
    assert receipt["openings"]["participant"]["value"] == str(participant.pseudonym)
    consent = participant.consents.get()
    assert consent.state == "revoked"
    assert [e.action for e in consent.events.order_by("created_at")] == ["grant", "revoke"]


def test_ethics_member_approves_a_study_in_chromium(page, screenshot, look):
    demo.demo_load()
    page.goto("/login/")
    page.fill("#id_username", "ethics")
    page.fill("#id_password", demo.DEMO_PASSWORDS["ethics"])
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Ethics-committee dashboard")
    row = page.locator("tr[data-study=pharma-cohort-2026]")
    expect(row).to_contain_text("pending")
    row.get_by_role("button", name="Approve").click()
    expect(page.locator("tr[data-study=pharma-cohort-2026]")).to_contain_text("approved")
    assert look("ethics-dashboard") == []


def test_answer_a_disease_request_for_this_study_only_then_withdraw_and_try_to_grant(page, look):
    demo.demo_load()
    participant = services.Participant.objects.get(user__username="participant")
    use = services.StudyUse.objects.get(study__identifier="diabetes-genomics-2026", permission_id="DUO:0000007")
    services.study_use_decide(use_id=use.pk, approve=True, member=None)
    page.goto("/login/")
    page.fill("#id_username", "participant")
    page.fill("#id_password", demo.DEMO_PASSWORDS["participant"])
    page.click("button[type=submit]")
    page.click("text=Requests")
    # The demo approved the study's HMB use; approving its DS use just now asked again.
    requests = page.get_by_test_id("request")
    expect(requests).to_have_count(2)
    expect(page.get_by_role("link", name="Requests (2 open)")).to_be_visible()
    ds_request = requests.filter(has_text="DUO:0000007")
    expect(ds_request).to_contain_text("Genomic risk factors of type 2 diabetes")
    # The card names the disease, in words and by its code.
    expect(ds_request.get_by_test_id("asks")).to_contain_text("Only research on type 2 diabetes mellitus")
    expect(ds_request.get_by_test_id("asks")).to_contain_text("MONDO:0005148")
    assert look("requests") == []
    ds_request.get_by_test_id("yes-study").click()
    expect(page.get_by_test_id("purpose-allows")).to_contain_text("DUO:0000027")
    expect(page.get_by_test_id("purpose-allows")).to_contain_text("type 2 diabetes mellitus")
    assert look("confirm-grant-study-only") == []
    page.get_by_test_id("confirm").click()
    expect(page.locator(".messages")).to_contain_text("your consent is granted")
    expect(page.get_by_role("link", name="Requests (1 open)")).to_be_visible()
    consent = participant.consents.get()
    assert consent.purpose.study.identifier == "diabetes-genomics-2026"
    assert consent.purpose.modifier_params == {"DUO:0000027": {"project": "diabetes-genomics-2026"}}
    page.click("text=My consents")
    expect(page.locator(f"tr[data-purpose={consent.purpose.slug}]")).to_contain_text("Only the study")
    assert look("consents") == []
    page.locator(f"tr[data-purpose={consent.purpose.slug}]").get_by_role("link", name=re.compile("^Revoke")).click()
    expect(page.get_by_test_id("consequences")).to_contain_text("This is final.")
    assert look("confirm-revoke") == []
    page.get_by_role("link", name="Cancel").click()
    page.click("text=Credentials")
    expect(page.get_by_test_id("credential-status").last).to_have_text("Active: valid")
    assert look("credentials") == []

    page.click("text=Withdraw")
    assert look("withdraw") == []
    page.check("input[value=no_use]")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_test_id("consequences")).to_contain_text("to be destroyed")
    assert look("confirm-withdraw") == []
    page.get_by_test_id("confirm").click()
    expect(page.locator(".messages")).to_contain_text("No further use")
    expect(page.get_by_test_id("confirmation").first).to_contain_text("awaiting the custodian")
    assert look("withdrawn") == []  # with the flash message and the banner
    assert participant.consents.get().state == "revoked"
    # A custodial participant's withdrawal is signed by the portal, and says so.
    expect(page.get_by_test_id("signed-by")).to_have_text("portal-custodial-key")
    assert participant.withdrawals.get().signed_by == "portal-custodial-key"
    assert participant.consents.get().events.get(action="revoke").signed_by == "portal-custodial-key"

    # Then trying to grant: no Grant on offer, the withdrawal on every page, and the grant
    # address itself refuses.
    page.click("text=My consents")
    expect(page.get_by_test_id("withdrawal-banner")).to_contain_text("No further use")
    expect(page.get_by_role("link", name=re.compile("^Grant"))).to_have_count(0)
    expect(page.locator("tr[data-purpose=health-medical-research]")).to_contain_text("Rejoin to give consent")
    assert look("consents-withdrawn") == []
    page.goto("/portal/consents/grant/health-medical-research/")
    expect(page.locator(".messages")).to_contain_text("rejoin first")
    assert participant.consents.count() == 1
    page.click("text=History")
    expect(page.get_by_test_id("withdrawal-banner")).to_be_visible()
    page.get_by_test_id("withdrawal-banner").get_by_role("link").click()
    expect(page.get_by_test_id("rejoin-meaning")).to_contain_text("stay withdrawn")
    assert look("rejoin") == []
