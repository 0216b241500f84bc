"""The chain reported in issue 14, tried again with two custodian tokens: each step is
refused. The ledger's own privacy (blinded entries) is tested in test_privacy_ledger.py."""

import json

from django.test import Client

from consent_portal import services
from ledger import services as ledger_services


def post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def test_custodian_a_cannot_reach_participant_b_through_the_api(make_participant, purposes, approved_study):
    a, a_token = services.custodian_create(name="Custodian A")
    b, b_token = services.custodian_create(name="Custodian B")
    api_a = Client(HTTP_AUTHORIZATION=f"Bearer {a_token}")
    api_b = Client(HTTP_AUTHORIZATION=f"Bearer {b_token}")
    participant_b = make_participant("participant-b")
    consent = services.consent_grant(participant=participant_b, purpose=purposes["health-medical-research"])
    reference = post(api_b, "/api/v1/enrolments",
                     {"code": services.donation_code_create(participant=participant_b)}).json()["participant"]
    assert post(api_b, "/api/v1/samples", {"sample": "B-1", "participant": reference, "kind": "blood"}).status_code == 201
    ledger_services.ledger_seal_pending()

    # 1. A pages through the ledger's entries: refused (member nodes only).
    assert api_a.get("/api/v1/ledger/entries?start=0&limit=1000").status_code == 403
    assert api_a.get("/api/v1/ledger/entries/0").status_code == 403
    # 2. A registers a sample of its own against B's participant code, or B's reference.
    for who in (str(participant_b.pseudonym), reference):
        response = post(api_a, "/api/v1/samples", {"sample": "A-1", "participant": who, "kind": "blood"})
        assert response.status_code == 404 and response.json()["error"] == "unknown_participant"
    # 3. A's check on such a sample, or on B's: no sample of A's, no consent state, no credential.
    for sample in ("A-1", "B-1"):
        response = post(api_a, "/api/v1/consent-checks",
                        {"sample": sample, "study": "hmb-study", "purpose": "DUO:0000006"})
        assert response.status_code == 404 and response.json()["evidence"]["consent"] is None
    # 4. A reads B's consent as FHIR: not a participant whose sample A holds.
    uuid = consent.credential_id.removeprefix("urn:uuid:")
    assert api_a.get(f"/api/v1/consents/{uuid}/fhir").status_code == 404
    # B, which collected the sample, still gets all of it.
    assert post(api_b, "/api/v1/consent-checks",
                {"sample": "B-1", "study": "hmb-study", "purpose": "DUO:0000006"}).json()["decision"] == "permit"
    fhir = api_b.get(f"/api/v1/consents/{uuid}/fhir")
    assert fhir.status_code == 200
    # B knows the participant by its own reference; no identifier other custodians share.
    assert fhir.json()["patient"]["identifier"]["value"] == reference
    assert str(participant_b.pseudonym) not in fhir.content.decode()
    assert participant_b.did not in fhir.content.decode() and "sourceAttachment" not in fhir.json()
