"""Issue #6: studies, dynamic consent, withdrawal levels, bulk checks, FHIR, erasure."""

import hashlib
import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from consent_portal import services
from consent_portal.models import (
    BulkCheck, Consent, ConsentRequest, Disease, Participant, StudyUse, WithdrawalInstruction,
)
from identity import selectors as identity_selectors
from ledger import services as ledger_services
from ledger.models import Entry, EntryOpenings
from ledger.selectors import entry_bytes
from tests.ledger import read


def api_client(token):
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


@pytest.fixture
def custodian(custodian_and_token):
    return custodian_and_token[0]


@pytest.fixture
def api(custodian_and_token):
    return api_client(custodian_and_token[1])


# Studies and approvals ------------------------------------------------------------------------


def test_expired_approval_denies(participant, purposes, custodian, api, approved_study):
    services.sample_register(custodian=custodian, identifier="S-1", participant=participant, kind="blood")
    services.consent_grant(participant=participant, purpose=purposes["general-research"])
    StudyUse.objects.filter(study=approved_study).update(expires_on=timezone.now().date() - timedelta(days=1))
    body = post(api, "/api/v1/consent-checks", {"sample": "S-1", "study": "hmb-study", "purpose": "DUO:0000006"}).json()
    assert body["decision"] == "deny" and body["reasons"][0]["code"] == "study_approval_expired"


def test_approval_cannot_expire_in_the_past(approved_study, ethics_member):
    use = approved_study.uses.get()
    with pytest.raises(ValueError):
        services.study_use_decide(use_id=use.pk, approve=True, member=ethics_member,
                                  expires_on=timezone.now().date())


def test_disease_hierarchy_lets_a_diabetes_consent_cover_type_2_diabetes(participant, purposes, custodian, api):
    Disease.objects.create(id="MONDO:0005015", label="diabetes mellitus")
    Disease.objects.create(id="MONDO:0005148", label="type 2 diabetes mellitus", parent_id="MONDO:0005015")
    study = services.study_submit(identifier="t2d", title="T2D", institution="U", commercial=False,
                                  uses=[{"permission": "DUO:0000007", "disease_id": "MONDO:0005148"}])
    services.study_use_decide(use_id=study.uses.get().pk, approve=True, member=None)
    services.sample_register(custodian=custodian, identifier="S-1", participant=participant, kind="blood")
    services.consent_grant(participant=participant, purpose=purposes["diabetes-research"])
    body = post(api, "/api/v1/consent-checks", {"sample": "S-1", "study": "t2d", "purpose": "DUO:0000007"}).json()
    assert body["decision"] == "permit"


def test_study_submission_api_validates_duo_uses(api, db):
    good = {"identifier": "s-api", "title": "T", "institution": "U", "commercial": False,
            "countries": ["GB"], "uses": [{"permission": "DUO:0000006"}]}
    assert post(api, "/api/v1/studies", good).status_code == 201
    assert StudyUse.objects.get(study__identifier="s-api").status == "pending"
    bad = post(api, "/api/v1/studies", {**good, "identifier": "s2", "uses": [{"permission": "DUO:0009999"}]})
    assert bad.status_code == 400 and "uses" in bad.json()["fields"]
    ds = post(api, "/api/v1/studies", {**good, "identifier": "s3", "uses": [{"permission": "DUO:0000007"}]})
    assert ds.status_code == 400
    again = post(api, "/api/v1/studies", good)
    assert again.status_code == 400 and "identifier" in again.json()["fields"]


# Dynamic consent ------------------------------------------------------------------------------


def test_approving_a_use_asks_those_who_have_not_granted_it(make_participant, purposes, mailoutbox,
                                                            django_capture_on_commit_callbacks):
    asked, covered, withdrawn = make_participant("asked"), make_participant("covered"), make_participant("gone")
    asked.user.email = "asked@example.org"
    asked.user.save()
    services.consent_grant(participant=covered, purpose=purposes["general-research"])
    services.participant_withdraw(participant=withdrawn, level="no_contact")
    study = services.study_submit(identifier="s", title="Heart study", institution="U", commercial=False,
                                  uses=[{"permission": "DUO:0000006"}])
    use = study.uses.get()
    with django_capture_on_commit_callbacks(execute=True):
        services.study_use_decide(use_id=use.pk, approve=True, member=None)
    requests = ConsentRequest.objects.filter(use=use)
    assert list(requests.values_list("participant__user__username", flat=True)) == ["asked"]
    assert requests.get().purpose.slug == "health-medical-research"  # the narrowest covering purpose
    assert [m.to for m in mailoutbox] == [["asked@example.org"]]
    assert services.consent_requests_create(use_id=use.pk) == 0  # asked once only


def test_answering_a_request_grants_or_declines_and_the_study_sees_only_counts(make_participant, purposes):
    yes, no = make_participant("yes"), make_participant("no")
    study = services.study_submit(identifier="s", title="T", institution="U", commercial=False,
                                  uses=[{"permission": "DUO:0000006"}])
    use = study.uses.get()
    services.study_use_decide(use_id=use.pk, approve=True, member=None)
    services.consent_requests_create(use_id=use.pk)
    with pytest.raises(services.ConsentStateError, match="Choose this study only"):
        services.consent_request_answer(participant=yes, request_id=yes.requests.get().pk, grant=True)
    services.consent_request_answer(participant=yes, request_id=yes.requests.get().pk, grant=True, scope="standing")
    services.consent_request_answer(participant=no, request_id=no.requests.get().pk, grant=False)
    # The catalogue's purpose exactly as asked (HMB, no modifiers).
    assert Consent.objects.get(participant=yes).purpose.slug == "health-medical-research"
    assert not Consent.objects.filter(participant=no).exists()
    from consent_portal import selectors

    assert selectors.request_counts(use_ids=[use.pk])[use.pk] == {"asked": 2, "granted": 1, "declined": 1, "covered": 0, "open": 0}
    with pytest.raises(services.ConsentStateError):
        services.consent_request_answer(participant=no, request_id=no.requests.get().pk, grant=True)
    with pytest.raises(ConsentRequest.DoesNotExist):
        services.consent_request_answer(participant=no, request_id=yes.requests.get().pk, grant=False)


def test_a_suspension_with_an_end_resumes_by_itself(participant, purposes):
    consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    with pytest.raises(services.ConsentStateError):
        services.consent_change(participant=participant, consent_id=consent.pk, action="suspend",
                                suspend_until=timezone.now() - timedelta(minutes=1))
    end = timezone.now() + timedelta(days=30)
    services.consent_change(participant=participant, consent_id=consent.pk, action="suspend", suspend_until=end)
    assert services.consents_resume_due() == 0
    assert services.consents_resume_due(now=end + timedelta(seconds=1)) == 1
    consent.refresh_from_db()
    assert consent.state == "granted" and consent.suspended_until is None
    assert identity_selectors.credential_status(credential_id=consent.credential_id)["suspended"] is False
    event = consent.events.order_by("-created_at").first()
    assert (event.action, event.signed_by) == ("resume", "scheduled-resume")
    assert services.consents_resume_due(now=end + timedelta(days=1)) == 0  # safe to run twice


# Withdrawal levels ----------------------------------------------------------------------------


@pytest.fixture
def donor(participant, purposes, custodian):
    services.consent_grant(participant=participant, purpose=purposes["general-research"])
    services.sample_register(custodian=custodian, identifier="S-1", participant=participant, kind="blood")
    services.sample_register(custodian=custodian, identifier="S-2", participant=participant, kind="dna")
    return participant


def test_no_further_contact_keeps_consents_and_instructs_nobody(donor):
    services.participant_withdraw(participant=donor, level="no_contact")
    assert donor.consents.get().state == "granted"
    assert not WithdrawalInstruction.objects.exists()


@pytest.mark.parametrize("level, action", [("no_access", "stop_access"), ("no_use", "destroy")])
def test_withdrawal_revokes_and_instructs_custodians(donor, level, action, api):
    withdrawal = services.participant_withdraw(participant=donor, level=level)
    consent = donor.consents.get()
    assert consent.state == "revoked"
    assert identity_selectors.credential_status(credential_id=consent.credential_id)["revoked"] is True
    assert json.loads(entry_bytes(entry_id=withdrawal.ledger_entry.id))["level"] == level
    feed = api.get("/api/v1/withdrawals?since=0").json()
    assert [(i["sample"], i["action"]) for i in feed["instructions"]] == [("S-1", action), ("S-2", action)]
    withdrawal.ledger_entry.refresh_from_db()
    assert all(i["withdrawal"] == {
        "id": str(withdrawal.id), "signed_by": withdrawal.signed_by, "decision": withdrawal.decision_jwt or None,
        "ledger_index": withdrawal.ledger_entry.index} for i in feed["instructions"])
    assert withdrawal.signed_by == "portal-custodial-key"
    assert api.get(f"/api/v1/withdrawals?since={feed['next']}").json()["instructions"] == []


def test_custodians_confirm_destruction_and_the_participant_sees_it(donor, api, django_capture_on_commit_callbacks):
    services.participant_withdraw(participant=donor, level="no_use")
    first = api.get("/api/v1/withdrawals").json()["instructions"][0]
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/withdrawals/{first['id']}/confirm")
    assert response.status_code == 200 and response.json()["confirmed_at"]
    assert api.post(f"/api/v1/withdrawals/{first['id']}/confirm").status_code == 409
    (entry,) = read.of_kind("withdrawal.confirmed")
    assert json.loads(entry_bytes(entry_id=entry.id))["action"] == "destroy"
    client = Client()
    client.force_login(donor.user)
    page = client.get("/portal/withdraw/").content.decode()
    assert f"ledger #{entry.index}" in page and "awaiting the custodian" in page  # S-2 not yet


def test_a_custodian_sees_and_confirms_only_its_own_instructions(donor, db):
    services.participant_withdraw(participant=donor, level="no_use")
    _, other_token = services.custodian_create(name="Other lab")
    other = api_client(other_token)
    assert other.get("/api/v1/withdrawals").json()["instructions"] == []
    seq = WithdrawalInstruction.objects.first().seq
    assert other.post(f"/api/v1/withdrawals/{seq}/confirm").status_code == 404


def test_withdrawal_feed_rejects_a_bad_cursor(api):
    response = api.get("/api/v1/withdrawals?since=-1")
    assert response.status_code == 400 and "since" in response.json()["fields"]


# Bulk checks ----------------------------------------------------------------------------------


def _bulk(api, samples, study="hmb-study", purpose="DUO:0000006"):
    return post(api, "/api/v1/consent-checks/bulk", {"study": study, "purpose": purpose, "samples": samples})


def test_bulk_check_answers_each_sample_and_records_a_digest(make_participant, purposes, custodian, api,
                                                              approved_study):
    yes, no = make_participant("yes"), make_participant("no")
    services.consent_grant(participant=yes, purpose=purposes["general-research"])
    services.sample_register(custodian=custodian, identifier="A", participant=yes, kind="blood")
    services.sample_register(custodian=custodian, identifier="B", participant=no, kind="blood")
    response = _bulk(api, ["A", "B", "C"])
    body = response.json()
    assert [(r["sample"], r["decision"]) for r in body["results"]] == [("A", "permit"), ("B", "deny"), ("C", "deny")]
    # The results travel as the exact bytes the digest was taken over.
    assert b'"results":' + services.canonical_json(body["results"]) + b"}" in response.content
    assert response["Content-Type"] == "application/json"
    assert [r["reasons"][0]["code"] for r in body["results"]] == ["consent_active", "no_consent", "unknown_sample"]
    assert body["results"][0]["evidence"]["credential"].startswith("urn:uuid:")
    digest = hashlib.sha256(services.canonical_json(body["results"])).hexdigest()
    assert body["results_sha256"] == digest
    bulk = BulkCheck.objects.get(pk=body["check"])
    assert json.loads(entry_bytes(entry_id=bulk.ledger_entry.id))["results_sha256"] == digest


def test_bulk_check_queries_do_not_grow_with_the_number_of_samples(make_participant, purposes, custodian, api,
                                                                    approved_study, django_assert_max_num_queries):
    for n in range(40):
        p = Participant.objects.create(did=f"did:example:{n}", enrolment_credential_id=f"urn:uuid:e{n}")
        services.sample_register(custodian=custodian, identifier=f"S{n}", participant=p, kind="blood")
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    _bulk(api, ["S0"])  # warm what the process remembers (the DUO permission ids)
    with CaptureQueriesContext(connection) as few:
        _bulk(api, ["S0", "S1"])
    with CaptureQueriesContext(connection) as many:
        _bulk(api, [f"S{n}" for n in range(40)])
    assert len(many) == len(few)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"study": "hmb-study", "purpose": "DUO:0000006", "samples": [f"S{n}" for n in range(10_001)]}, "samples"),
        ({"study": "hmb-study", "purpose": "DUO:0000006", "samples": ["A", "A"]}, "samples"),
        ({"study": "hmb-study", "purpose": "DUO:0000006", "samples": []}, "samples"),
        ({"study": "nope", "purpose": "DUO:0000006", "samples": ["A"]}, "study"),
        ({"study": "hmb-study", "purpose": "DUO:1234567", "samples": ["A"]}, "purpose"),
    ],
)
def test_bulk_check_bad_input_is_400(api, approved_study, body, field):
    response = post(api, "/api/v1/consent-checks/bulk", body)
    assert response.status_code == 400 and field in response.json()["fields"]
    assert not BulkCheck.objects.exists()


# FHIR -----------------------------------------------------------------------------------------


def test_each_consent_exports_as_a_fhir_r4_consent_the_validator_accepts(participant, purposes, custodian, api):
    from fhir.resources import __fhir_version__
    from fhir.resources.consent import Consent as FhirConsent

    assert __fhir_version__ == "4.0.1"
    consent = services.consent_grant(participant=participant, purpose=purposes["general-research-non-commercial"])
    services.sample_register(custodian=custodian, identifier="S-1", participant=participant, kind="blood")
    uuid = consent.credential_id.removeprefix("urn:uuid:")
    response = api.get(f"/api/v1/consents/{uuid}/fhir")
    assert response.status_code == 200
    resource = FhirConsent.parse_obj(response.json())
    assert resource.status == "active"
    assert resource.policyRule.coding[0].code == "DUO:0000042"
    assert resource.provision.code[0].coding[0].code == "DUO:0000046"
    # The custodian's own reference for the participant, not the portal-wide pseudonym.
    assert resource.patient.identifier.value == custodian.enrolments.get(participant=participant).reference
    assert str(participant.pseudonym) not in response.content.decode()
    services.consent_change(participant=participant, consent_id=consent.pk, action="revoke")
    # R4 "rejected" is a refusal by a party; a revoked consent is "inactive" (terminated).
    assert FhirConsent.parse_obj(api.get(f"/api/v1/consents/{uuid}/fhir").json()).status == "inactive"
    _, other_token = services.custodian_create(name="Other lab")
    assert api_client(other_token).get(f"/api/v1/consents/{uuid}/fhir").status_code == 404


def test_participant_downloads_fhir_of_own_consents_only(make_participant, purposes):
    alice, bob = make_participant("alice"), make_participant("bob")
    consent = services.consent_grant(participant=alice, purpose=purposes["diabetes-research"])
    client = Client()
    client.force_login(alice.user)
    from fhir.resources.consent import Consent as FhirConsent

    FhirConsent.parse_raw(client.get(f"/portal/consents/{consent.pk}/fhir.json").content)
    client.force_login(bob.user)
    assert client.get(f"/portal/consents/{consent.pk}/fhir.json").status_code == 404


# Erasure --------------------------------------------------------------------------------------


def test_erasure_removes_the_person_and_leaves_the_ledger_verifiable(donor, django_capture_on_commit_callbacks):
    pseudonym = str(donor.pseudonym)
    with django_capture_on_commit_callbacks(execute=True):
        services.participant_erase(participant=donor)
    ledger_services.ledger_seal_pending()
    donor.refresh_from_db()
    assert donor.user is None and donor.erasure.erased_at
    assert not get_user_model().objects.filter(username="alice").exists()
    assert donor.consents.get().state == "revoked"
    assert set(WithdrawalInstruction.objects.values_list("action", flat=True)) == {"destroy"}
    payloads = [entry_bytes(entry_id=pk).decode() for pk in Entry.objects.values_list("id", flat=True)]
    assert not any(pseudonym in p or "alice" in p for p in payloads)  # the ledger never had them
    # Every entry about the participant stays in the log, and none can be opened any more:
    # nothing shows which were theirs.
    assert not EntryOpenings.objects.filter(subject=pseudonym).exists()
    assert not any(read.opened(entry).get("participant") == pseudonym for entry in Entry.objects.all())
    assert not Participant.objects.filter(pseudonym=pseudonym, user__isnull=False).exists()
    assert ledger_services.ledger_verify().ok


def test_erasure_through_the_portal_logs_out(participant, purposes):
    client = Client()
    client.force_login(participant.user)
    assert client.post("/portal/erase/", {"confirm": "nope"}).status_code == 302
    assert Participant.objects.get(pk=participant.pk).user_id is not None
    response = client.post("/portal/erase/", {"confirm": "erase my data"})
    assert b"Your data is erased" in response.content
    assert client.get("/portal/").status_code == 302


@pytest.mark.parametrize("samples", [["ok", 7], ["ok", ""], ["x" * 101], "S-1", {"a": 1}])
def test_bulk_check_refuses_sample_lists_of_the_wrong_shape(api, approved_study, samples):
    response = post(api, "/api/v1/consent-checks/bulk",
                    {"study": "hmb-study", "purpose": "DUO:0000006", "samples": samples})
    assert response.status_code == 400 and "samples" in response.json()["fields"]


def test_bulk_check_names_each_participants_own_credential(make_participant, purposes, custodian, api,
                                                           approved_study):
    # Same consents, same answer, but the evidence must be each participant's own.
    people = [make_participant(f"twin{n}") for n in range(3)]
    credentials = []
    for n, person in enumerate(people):
        credentials.append(services.consent_grant(participant=person, purpose=purposes["general-research"]).credential_id)
        services.sample_register(custodian=custodian, identifier=f"T{n}", participant=person, kind="blood")
    body = _bulk(api, ["T0", "T1", "T2"]).json()
    assert [r["evidence"]["credential"] for r in body["results"]] == credentials
