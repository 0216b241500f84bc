"""The FHIR R4 export says each consent state as R4 ConsentState defines it, and the
credentials page shows every credential's live status."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from consent_portal import services
from consent_portal.models import ConsentEvent

fhir_resources = pytest.importorskip("fhir.resources")
from fhir.resources.consent import Consent as FhirConsent  # noqa: E402


@pytest.fixture
def custodian_client(participant, custodian_and_token):
    custodian, token = custodian_and_token
    services.sample_register(custodian=custodian, identifier="S-1", participant=participant, kind="blood")
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def exported(client, consent) -> tuple[dict, FhirConsent]:
    """The API's FHIR export of the consent, raw and as validated by the R4 models."""
    response = client.get(f"/api/v1/consents/{consent.credential_id.removeprefix('urn:uuid:')}/fhir")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/fhir+json")
    body = response.json()
    return body, FhirConsent.parse_obj(body)


def event_at(consent, action):
    return ConsentEvent.objects.filter(consent=consent, action=action).latest("created_at").created_at


def test_the_validator_is_r4():
    assert fhir_resources.__fhir_version__ == "4.0.1"


# FHIR: one state a test --------------------------------------------------------------------


def test_a_granted_consent_is_active_with_an_open_period_and_no_deny(participant, purposes, custodian_client):
    consent = services.consent_grant(participant=participant, purpose=purposes["general-research-non-commercial"])
    body, resource = exported(custodian_client, consent)
    assert resource.status == "active"
    assert resource.provision.type == "permit"
    assert resource.provision.period.start == consent.granted_at
    assert resource.provision.period.end is None and "end" not in body["provision"]["period"]
    assert resource.provision.provision is None and "provision" not in body["provision"]
    # The rest of the resource is as before.
    assert resource.policyRule.coding[0].code == "DUO:0000042"
    assert resource.provision.code[0].coding[0].code == "DUO:0000046"


def test_a_revoked_consent_is_inactive_and_its_period_ends_at_the_revocation(
    participant, purposes, custodian_client
):
    consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    services.consent_change(participant=participant, consent_id=consent.pk, action="revoke")
    body, resource = exported(custodian_client, consent)
    # Not "rejected": that is a party refusing the consent; this one was given, then ended.
    assert resource.status == "inactive"
    assert resource.provision.type == "permit"
    assert resource.provision.period.start == consent.granted_at
    assert resource.provision.period.end == event_at(consent, ConsentEvent.REVOKE)
    assert resource.provision.provision is None and "provision" not in body["provision"]


def test_a_revocation_after_a_suspension_ends_the_period_and_drops_the_deny(participant, purposes, custodian_client):
    consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    services.consent_change(
        participant=participant, consent_id=consent.pk, action="suspend",
        suspend_until=timezone.now() + timedelta(days=30),
    )
    services.consent_change(participant=participant, consent_id=consent.pk, action="revoke")
    _, resource = exported(custodian_client, consent)
    assert resource.status == "inactive"
    assert resource.provision.period.end == event_at(consent, ConsentEvent.REVOKE)
    assert resource.provision.provision is None


def test_a_suspended_consent_is_inactive_with_a_deny_from_the_suspension_to_its_end(
    participant, purposes, custodian_client
):
    consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    until = timezone.now() + timedelta(days=30)
    consent = services.consent_change(participant=participant, consent_id=consent.pk, action="suspend",
                                      suspend_until=until)
    body, resource = exported(custodian_client, consent)
    assert resource.status == "inactive"
    # The consent itself has not ended: its period stays open ...
    assert resource.provision.type == "permit"
    assert resource.provision.period.end is None and "end" not in body["provision"]["period"]
    # ... and a nested deny covers the suspension, up to its scheduled end.
    [deny] = resource.provision.provision
    assert deny.type == "deny"
    assert deny.period.start == event_at(consent, ConsentEvent.SUSPEND)
    assert deny.period.end == until


def test_a_suspension_without_an_end_denies_from_the_latest_suspension_on(participant, purposes, custodian_client):
    consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    for action in ("suspend", "resume", "suspend"):
        services.consent_change(participant=participant, consent_id=consent.pk, action=action)
    body, resource = exported(custodian_client, consent)
    assert resource.status == "inactive"
    [deny] = resource.provision.provision
    assert deny.type == "deny"
    assert deny.period.start == event_at(consent, ConsentEvent.SUSPEND)
    assert deny.period.end is None and "end" not in body["provision"]["provision"][0]["period"]
    assert resource.provision.period.end is None


def test_a_resumed_consent_is_active_again_with_no_deny(participant, purposes, custodian_client):
    consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    for action in ("suspend", "resume"):
        services.consent_change(participant=participant, consent_id=consent.pk, action=action)
    _, resource = exported(custodian_client, consent)
    assert resource.status == "active"
    assert resource.provision.provision is None and resource.provision.period.end is None


def test_the_participants_download_of_a_suspended_consent_is_the_same_resource(participant, purposes):
    consent = services.consent_grant(participant=participant, purpose=purposes["diabetes-research"])
    services.consent_change(participant=participant, consent_id=consent.pk, action="suspend")
    client = Client()
    client.force_login(participant.user)
    resource = FhirConsent.parse_raw(client.get(f"/portal/consents/{consent.pk}/fhir.json").content)
    assert resource.status == "inactive"
    assert resource.provision.provision[0].type == "deny"


# The credentials page ----------------------------------------------------------------------


def cards(page: str) -> dict[str, str]:
    """{credential id: the HTML of its card}."""
    found = dict(re.findall(r'<div class="card credential[^"]*" data-credential="([^"]+)">(.*?)</div>', page, re.S))
    assert found, "no credential cards on the page"
    return found


def status_of(card: str) -> tuple[str, str]:
    """(the status pill's state class, its words)."""
    match = re.search(r'<span class="state (state-[a-z]+)" data-testid="credential-status">([^<]+)</span>', card)
    assert match, f"no status in the card: {card}"
    return match.group(1), match.group(2)


def test_every_credential_shows_its_live_status(participant, purposes):
    kept = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    paused = services.consent_grant(participant=participant, purpose=purposes["diabetes-research"])
    ended = services.consent_grant(participant=participant, purpose=purposes["health-medical-research"])
    until = timezone.now() + timedelta(days=10)
    services.consent_change(participant=participant, consent_id=paused.pk, action="suspend", suspend_until=until)
    services.consent_change(participant=participant, consent_id=ended.pk, action="revoke")
    client = Client()
    client.force_login(participant.user)
    page = client.get("/portal/credentials/").content.decode()
    by_id = cards(page)
    assert list(by_id) == [participant.enrolment_credential_id, kept.credential_id, paused.credential_id,
                           ended.credential_id]

    assert status_of(by_id[participant.enrolment_credential_id]) == ("state-active", "Active: valid")
    assert "Enrolment in the biobank" in by_id[participant.enrolment_credential_id]

    assert status_of(by_id[kept.credential_id]) == ("state-active", "Active: valid")
    assert f"Consent: {purposes['general-research'].title}" in by_id[kept.credential_id]

    assert status_of(by_id[paused.credential_id]) == ("state-suspended", "Suspended: paused")
    assert f"Consent: {purposes['diabetes-research'].title}" in by_id[paused.credential_id]
    assert f"Paused until {timezone.localtime(until):%-d %B %Y}" in by_id[paused.credential_id]

    assert status_of(by_id[ended.credential_id]) == ("state-revoked", "Revoked: no longer valid")
    assert f"Consent: {purposes['health-medical-research'].title}" in by_id[ended.credential_id]
    assert 'class="card credential credential-revoked"' in page

    # The downloads are still there, one a credential and all at once.
    for credential_id in by_id:
        assert f"/portal/credentials/{credential_id.removeprefix('urn:uuid:')}.json" in by_id[credential_id]
    assert 'href="?format=json"' in page


def test_the_status_on_the_page_follows_the_status_lists(participant, purposes):
    """Read from the lists, not the consent row: a bit flipped in identity shows."""
    from identity import services as identity_services

    consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    client = Client()
    client.force_login(participant.user)
    assert status_of(cards(client.get("/portal/credentials/").content.decode())[consent.credential_id])[0] == (
        "state-active"
    )
    identity_services.credential_suspend(credential_id=consent.credential_id)
    assert status_of(cards(client.get("/portal/credentials/").content.decode())[consent.credential_id])[0] == (
        "state-suspended"
    )


def test_the_page_costs_one_query_a_credential(participant, purposes):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(participant.user)

    def queries() -> int:
        client.get("/portal/credentials/")  # warm: the status lists verified once per ETag
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/portal/credentials/").status_code == 200
        return len(captured)

    one = queries()
    for slug in ("general-research", "diabetes-research", "health-medical-research"):
        services.consent_grant(participant=participant, purpose=purposes[slug])
    assert queries() == one + 3
