"""The pages of consent that holds: confirmation before every decision (as many steps to take
back as to give), the withdrawal shown everywhere, rejoining, and request cards that say
what they ask."""

import pytest
from django.test import Client

from consent_portal import services
from consent_portal.models import Consent, Disease, Purpose

PARTICIPANT_PAGES = ["/portal/", "/portal/consents/", "/portal/history/", "/portal/credentials/",
                     "/portal/keys/", "/portal/requests/", "/portal/withdraw/"]


@pytest.fixture
def client(participant):
    client = Client()
    client.force_login(participant.user)
    return client


@pytest.fixture
def custodian(custodian_and_token):
    return custodian_and_token[0]


def _page(client, url):
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def test_granting_and_revoking_take_the_same_steps_each_with_a_confirmation(client, participant, purposes):
    page = _page(client, "/portal/consents/")
    assert 'href="/portal/consents/grant/general-research/"' in page  # step 1: a link, no change yet
    confirm = _page(client, "/portal/consents/grant/general-research/")
    assert "What you allow" in confirm and "DUO:0000042" in confirm and "Yes, I give my consent" in confirm
    assert not Consent.objects.exists()
    client.post("/portal/consents/grant/general-research/")  # step 2
    consent = Consent.objects.get()
    page = _page(client, "/portal/consents/")
    assert f'href="/portal/consents/{consent.pk}/revoke/"' in page
    confirm = _page(client, f"/portal/consents/{consent.pk}/revoke/")
    assert "This is final." in confirm and "Revoke my consent for good" in confirm
    consent.refresh_from_db()
    assert consent.state == "granted"
    client.post(f"/portal/consents/{consent.pk}/revoke/")
    consent.refresh_from_db()
    assert consent.state == "revoked"
    # A revoked consent has no confirmation page to offer.
    assert client.get(f"/portal/consents/{consent.pk}/revoke/").status_code == 404


def test_the_suspend_confirmation_takes_an_end_and_refuses_an_impossible_date(client, participant, purposes):
    consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    assert 'name="until"' in _page(client, f"/portal/consents/{consent.pk}/suspend/")
    response = client.post(f"/portal/consents/{consent.pk}/suspend/", {"until": "2027-02-31"}, follow=True)
    assert "Give the end of the suspension as a date." in response.content.decode()
    consent.refresh_from_db()
    assert consent.state == "granted"


def test_each_row_names_its_purpose_to_a_screen_reader(client, purposes):
    page = _page(client, "/portal/consents/")
    assert 'Grant<span class="visually-hidden"> General research use</span>' in page


def test_the_withdrawal_shows_on_every_participant_page_and_grants_are_gone(client, participant, purposes, custodian):
    services.sample_register(custodian=custodian, identifier="S-1", participant=participant, kind="blood")
    for url in PARTICIPANT_PAGES:
        assert 'data-testid="withdrawal-banner"' not in _page(client, url)
    services.participant_withdraw(participant=participant, level="no_use")
    for url in PARTICIPANT_PAGES:
        page = _page(client, url)
        assert 'data-testid="withdrawal-banner"' in page and "No further use" in page, url
        assert "/portal/rejoin/" in page
    consents = _page(client, "/portal/consents/")
    assert "/portal/consents/grant/" not in consents and "Rejoin to give consent" in consents
    # The confirmation page refuses too, and so does a direct post.
    response = client.post("/portal/consents/grant/general-research/", follow=True)
    assert "rejoin first" in response.content.decode() and not Consent.objects.exists()


def test_the_withdrawal_confirmation_says_what_will_happen(client, participant, purposes, custodian):
    services.consent_grant(participant=participant, purpose=purposes["general-research"])
    services.sample_register(custodian=custodian, identifier="S-1", participant=participant, kind="blood")
    services.sample_register(custodian=custodian, identifier="S-2", participant=participant, kind="blood")
    page = _page(client, "/portal/withdraw/confirm?level=no_use")
    assert "General research use" in page and "2 samples, held by 1 custodian(s), are to be destroyed" in page
    assert "the samples you gave before stay withdrawn" in page
    assert not participant.withdrawals.exists()
    client.post("/portal/withdraw/", {"level": "no_access", "confirm": "yes"})
    withdraw = _page(client, "/portal/withdraw/")
    assert 'value="no_access" required disabled' in withdraw and 'value="no_contact" required disabled' in withdraw
    assert 'value="no_use" required>' in withdraw
    refused = client.get("/portal/withdraw/confirm?level=no_contact", follow=True).content.decode()
    assert "can only go further" in refused
    again = client.post("/portal/withdraw/", {"level": "no_access", "confirm": "yes"}, follow=True)
    assert "already withdrawn" in again.content.decode() and participant.withdrawals.count() == 1
    challenge = client.post("/portal/withdraw/challenge", {"level": "no_access"})
    assert challenge.status_code == 400 and "already withdrawn" in challenge.json()["error"]


def test_rejoining_through_its_page(client, participant, purposes):
    assert "You have not withdrawn" in _page(client, "/portal/rejoin/")
    services.participant_withdraw(participant=participant, level="no_access")
    page = _page(client, "/portal/rejoin/")
    assert "Samples and data you gave before you withdrew stay withdrawn" in page
    response = client.post("/portal/rejoin/", {})
    participant.refresh_from_db()
    assert response.status_code == 302 and participant.withdrawal_level == "no_access"  # not confirmed
    client.post("/portal/rejoin/", {"confirm": "yes"})
    participant.refresh_from_db()
    assert participant.withdrawal_level == ""
    assert 'data-testid="withdrawal-banner"' not in _page(client, "/portal/consents/")


def test_a_request_card_says_what_it_asks_and_offers_two_yeses(client, participant, purposes):
    Disease.objects.create(id="MONDO:0004992", label="cancer")
    study = services.study_submit(identifier="cancer-genomics", title="Cancer genomics", institution="U",
                                  commercial=False, uses=[{"permission": "DUO:0000007", "disease_id": "MONDO:0004992"}])
    use = study.uses.get()
    services.study_use_decide(use_id=use.pk, approve=True, member=None)
    services.consent_requests_create(use_id=use.pk)
    request = participant.requests.get()
    page = _page(client, "/portal/requests/")
    assert "Requests (1 open)" in page
    assert "Only research on <strong>cancer</strong>" in page and "MONDO:0004992" in page and "DUO:0000007" in page
    assert f"/portal/requests/{request.pk}/answer/?scope=study" in page
    assert f"/portal/requests/{request.pk}/answer/?scope=standing" in page
    confirm = _page(client, f"/portal/requests/{request.pk}/answer/?scope=study")
    assert "DUO:0000027" in confirm and "Cancer genomics" in confirm and "only for one study" in confirm.lower()
    client.post(f"/portal/requests/{request.pk}/answer/", {"answer": "grant", "scope": "study"})
    consent = Consent.objects.get()
    assert consent.purpose.study == study
    assert "Requests (1 open)" not in _page(client, "/portal/requests/")
    # The study-only purpose shows on this participant's consents page, and only theirs.
    assert "Only the study “Cancer genomics”" in _page(client, "/portal/consents/")
    other = Client()
    other.force_login(services.participant_sign_up(username="other", password="a long test password 1").user)
    assert "Cancer genomics" not in _page(other, "/portal/consents/")
    assert other.get(f"/portal/consents/grant/{consent.purpose.slug}/").status_code == 404
    assert Purpose.objects.filter(study=study).count() == 1


def test_no_page_confirms_what_cannot_be_done(client, participant, purposes):
    consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    for url in (f"/portal/consents/{consent.pk}/resume/", "/portal/consents/grant/general-research/"):
        response = client.get(url, follow=True)
        assert response.redirect_chain[-1][0] == "/portal/consents/", url
        page = response.content.decode()
        assert "cannot be resumed" in page or "already in place" in page
