"""A custodian check on a database whose credentials were issued under another SITE_URL:
denied, with a reason that names the cause in words."""

import json

import pytest
from django.test import Client

from consent_portal import services
from consent_portal.models import ConsentCheck
from identity import jsonld
from identity import selectors as identity_selectors
from identity import services as identity_services
from identity.models import IssuedCredential

OLD, NEW = "https://old.example", "https://new.example"
QUESTION = {"sample": "S-1", "study": "hmb-study", "purpose": "DUO:0000006"}


@pytest.fixture(autouse=True)
def _issued_under_old_with_cold_caches(settings):
    # Everything (the participant's enrolment too, which signs the status lists) is issued
    # under OLD. Verified status lists, list bits and JSON-LD shapes are cached per process.
    settings.SITE_URL = OLD
    caches = (identity_selectors._verified_lists, identity_services._list_bits, jsonld._checked_shapes)
    for cache in caches:
        cache.clear()
    yield
    for cache in caches:
        cache.clear()


@pytest.fixture
def api(custodian_and_token):
    return Client(HTTP_AUTHORIZATION=f"Bearer {custodian_and_token[1]}")


@pytest.fixture
def consent_under_old(settings, participant, purposes, custodian_and_token, approved_study, api):
    assert settings.SITE_URL == OLD
    services.sample_register(custodian=custodian_and_token[0], identifier="S-1", participant=participant, kind="blood")
    consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    assert check(api)["decision"] == "permit"
    return consent


def check(api, **body):
    response = api.post("/api/v1/consent-checks", data=json.dumps({**QUESTION, **body}), content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def test_served_under_another_site_url_the_check_denies_and_says_why(consent_under_old, api, settings):
    settings.SITE_URL = NEW
    body = check(api)
    assert body["decision"] == "deny"  # fail closed
    (not_verified, foreign) = body["reasons"]
    assert not_verified == {
        "code": "credential_not_verified",
        "message": (
            "The consent credential does not verify: status: the credential's status list"
            f" {OLD}/credentials/status/revocation is not published by this portal (SITE_URL is"
            f" {NEW}); was SITE_URL changed after it was issued?"
        ),
    }
    assert foreign["code"] == "status_list_foreign"
    assert f"SITE_URL ({NEW})" in foreign["message"] and "re-issue" in foreign["message"]
    # The same reasons are what the check recorded.
    stored = ConsentCheck.objects.get(pk=body["check"])
    assert stored.decision == ConsentCheck.DENY and stored.reasons == body["reasons"]
    # SITE_URL set back: permitted again.
    settings.SITE_URL = OLD
    assert check(api)["decision"] == "permit"


def test_every_failure_is_a_sentence_without_a_status_list_reason(consent_under_old, api):
    row = IssuedCredential.objects.get(pk=consent_under_old.credential_id)
    subject = {**row.document["credentialSubject"], "purpose": "DUO:0000004"}
    IssuedCredential.objects.filter(pk=row.pk).update(document={**row.document, "credentialSubject": subject})
    body = check(api)
    assert body["decision"] == "deny"
    assert [reason["code"] for reason in body["reasons"]] == ["credential_not_verified"]
    message = body["reasons"][0]["message"]
    # A sentence naming the check and didkit's reason, not a dict of check values.
    assert message.startswith("The consent credential does not verify: signature: ") and message.endswith(".")
    assert "{" not in message and "failed:" not in message


def test_the_participants_credentials_page_does_not_call_an_unverifiable_credential_valid(
        consent_under_old, participant, settings):
    client = Client()
    client.force_login(participant.user)
    assert "Active: valid" in client.get("/portal/credentials/").content.decode()
    settings.SITE_URL = NEW
    page = client.get("/portal/credentials/").content.decode()
    assert "Active: valid" not in page and "Cannot be verified" in page
    assert "is not published by this portal" in page


def test_a_bulk_check_denies_too_when_the_status_lists_are_not_this_portals(consent_under_old, api, settings):
    body = {"study": "hmb-study", "purpose": "DUO:0000006", "samples": ["S-1"]}
    answer = api.post("/api/v1/consent-checks/bulk", data=json.dumps(body), content_type="application/json").json()
    assert answer["results"][0]["decision"] == "permit"
    settings.SITE_URL = NEW
    answer = api.post("/api/v1/consent-checks/bulk", data=json.dumps(body), content_type="application/json").json()
    (result,) = answer["results"]
    assert result["decision"] == "deny" and answer["permits"] == 0
    (reason,) = result["reasons"]
    assert reason["code"] == "credential_not_verified" and "not published by this portal" in reason["message"]
