"""Consent that holds: withdrawal levels only go up and reach every sample registered before
them, destroyed samples are denied for ever, rejoining is a signed act of its own, and a
study's request grants what its card shows and no more."""

import json

import pytest
from django.test import Client

from consent_portal import services
from consent_portal.models import (
    Consent, ConsentRequest, Disease, Purpose, Rejoin, Sample, WithdrawalInstruction,
)
from ledger.selectors import entry_bytes
from tests.ledger import read

CANCER = "MONDO:0004992"


def api_client(token):
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def check(api, sample, study="hmb-study", purpose="DUO:0000006"):
    response = api.post("/api/v1/consent-checks", data=json.dumps(
        {"sample": sample, "study": study, "purpose": purpose}), content_type="application/json")
    assert response.status_code == 200, response.content
    body = response.json()
    return body["decision"], [r["code"] for r in body["reasons"]], body


@pytest.fixture
def custodian(custodian_and_token):
    return custodian_and_token[0]


@pytest.fixture
def api(custodian_and_token):
    return api_client(custodian_and_token[1])


@pytest.fixture
def donor(participant, purposes, custodian):
    services.consent_grant(participant=participant, purpose=purposes["health-medical-research"])
    services.sample_register(custodian=custodian, identifier="S-1", participant=participant, kind="blood")
    services.sample_register(custodian=custodian, identifier="S-2", participant=participant, kind="dna")
    return participant


def _refresh(participant):
    participant.refresh_from_db()
    return participant


# Withdrawal levels only go up --------------------------------------------------------------


def test_a_repeated_or_lower_withdrawal_is_refused_with_a_sentence(donor):
    services.participant_withdraw(participant=donor, level="no_use")
    with pytest.raises(services.ConsentStateError, match="already withdrawn at “No further use"):
        services.participant_withdraw(participant=_refresh(donor), level="no_use")
    with pytest.raises(services.ConsentStateError, match="can only go further"):
        services.participant_withdraw(participant=donor, level="no_contact")
    with pytest.raises(services.ConsentStateError, match="can only go further"):
        services.withdrawal_challenge_create(participant=donor, level="no_access", domain="testserver")
    assert donor.withdrawals.count() == 1
    assert WithdrawalInstruction.objects.count() == 2  # one per sample, not one per attempt


def test_withdrawing_further_closes_the_weaker_instruction_still_open(donor, api):
    services.participant_withdraw(participant=donor, level="no_access")
    stop_1, stop_2 = WithdrawalInstruction.objects.order_by("seq")
    assert api.post(f"/api/v1/withdrawals/{stop_1.seq}/confirm").status_code == 200
    services.participant_withdraw(participant=_refresh(donor), level="no_use")
    assert _refresh(donor).withdrawal_level == "no_use"
    feed = {i["id"]: i for i in api.get("/api/v1/withdrawals").json()["instructions"]}
    destroys = [i for i in feed.values() if i["action"] == "destroy"]
    assert [i["sample"] for i in destroys] == ["S-1", "S-2"] and all(i["status"] == "open" for i in destroys)
    # S-1's stop was carried out and stays confirmed; S-2's is closed by the destroy for S-2.
    assert feed[stop_1.seq]["status"] == "confirmed"
    assert feed[stop_2.seq]["status"] == "superseded"
    assert feed[stop_2.seq]["superseded_by"] == destroys[1]["id"]
    refused = api.post(f"/api/v1/withdrawals/{stop_2.seq}/confirm")
    assert refused.status_code == 409 and refused.json()["error"] == "superseded"
    assert f"instruction {destroys[1]['id']}" in refused.json()["detail"]


def test_no_further_contact_then_further_is_allowed(donor):
    services.participant_withdraw(participant=donor, level="no_contact")
    assert donor.consents.get().state == "granted"
    services.participant_withdraw(participant=_refresh(donor), level="no_access")
    assert donor.consents.get().state == "revoked"
    assert _refresh(donor).withdrawal_level == "no_access"


# What a withdrawal means for checks -------------------------------------------------------


def test_after_withdrawal_no_later_grant_permits_the_earlier_samples(donor, api, approved_study):
    assert check(api, "S-1")[0] == "permit"
    services.participant_withdraw(participant=donor, level="no_use")
    # No grant while the withdrawal is in force: the service refuses, as the pages do.
    with pytest.raises(services.ConsentStateError, match="rejoin first"):
        services.consent_grant(participant=_refresh(donor), purpose=Purpose.objects.get(slug="general-research"))
    with pytest.raises(services.ConsentStateError, match="rejoin first"):
        services.decision_challenge_create(participant=donor, action="grant", domain="testserver",
                                           purpose=Purpose.objects.get(slug="general-research"))
    # The custodian confirms destroying S-1; S-2 is still to be destroyed.
    s1 = WithdrawalInstruction.objects.get(sample__identifier="S-1")
    assert api.post(f"/api/v1/withdrawals/{s1.seq}/confirm").status_code == 200
    services.participant_rejoin(participant=_refresh(donor))
    services.consent_grant(participant=_refresh(donor), purpose=Purpose.objects.get(slug="health-medical-research"))
    decision, reasons, body = check(api, "S-1")
    assert (decision, reasons) == ("deny", ["sample_destroyed"]) and body["evidence"]["consent"] is None
    assert check(api, "S-2")[:2] == ("deny", ["withdrawn"])
    # A sample given after rejoining is covered by the new consent.
    services.sample_register(custodian=donor.samples.first().custodian, identifier="S-3",
                             participant=donor, kind="blood")
    assert check(api, "S-3")[:2] == ("permit", ["consent_active"])
    # Bulk checks give the same answers.
    bulk = api.post("/api/v1/consent-checks/bulk", data=json.dumps(
        {"study": "hmb-study", "purpose": "DUO:0000006", "samples": ["S-1", "S-2", "S-3"]}),
        content_type="application/json").json()
    assert [r["reasons"][0]["code"] for r in bulk["results"]] == ["sample_destroyed", "withdrawn", "consent_active"]
    # The check records carry the reason codes on the ledger.
    codes = [json.loads(entry_bytes(entry_id=e.id))["reasons"] for e in read.of_kind("consent.check")]
    assert ["sample_destroyed"] in codes and ["withdrawn"] in codes


def test_a_sample_registered_while_withdrawn_is_withdrawn_from_the_start(donor, custodian, api, approved_study):
    services.participant_withdraw(participant=donor, level="no_access")
    sample = services.sample_register(custodian=custodian, identifier="S-late", participant=donor, kind="blood")
    assert sample.withdrawn_at is not None
    services.participant_rejoin(participant=_refresh(donor))
    services.consent_grant(participant=_refresh(donor), purpose=Purpose.objects.get(slug="general-research"))
    assert check(api, "S-late")[:2] == ("deny", ["withdrawn"])


def test_no_further_contact_holds_back_no_sample(donor, api, approved_study):
    services.participant_withdraw(participant=donor, level="no_contact")
    assert not Sample.objects.filter(withdrawn_at__isnull=False).exists()
    assert check(api, "S-1")[0] == "permit"


# Rejoining ----------------------------------------------------------------------------------


def test_rejoining_is_a_signed_decision_on_the_ledger(donor):
    with pytest.raises(services.ConsentStateError, match="not withdrawn"):
        services.participant_rejoin(participant=donor)
    services.participant_withdraw(participant=donor, level="no_use")
    rejoin = services.participant_rejoin(participant=_refresh(donor))
    assert _refresh(donor).withdrawal_level == ""
    assert rejoin.ended_level == "no_use" and rejoin.signed_by == "portal-custodial-key" and rejoin.decision_jwt
    (entry,) = read.of_kind("participant.rejoined")
    payload = json.loads(entry_bytes(entry_id=entry.id))
    assert payload["ended_level"] == "no_use" and payload["signed_by"] == "portal-custodial-key"
    assert Rejoin.objects.get().ledger_entry_id == entry.id
    # Withdrawing again after rejoining is a fresh start up the levels.
    services.participant_withdraw(participant=_refresh(donor), level="no_contact")


def test_a_self_held_key_must_sign_the_rejoin(donor):
    services.participant_withdraw(participant=donor, level="no_access")
    donor.key_custody = donor.SELF_CUSTODY
    donor.save(update_fields=["key_custody"])
    with pytest.raises(services.ConsentStateError, match="sign this decision"):
        services.participant_rejoin(participant=donor)
    assert _refresh(donor).withdrawal_level == "no_access" and not Rejoin.objects.exists()


def test_rejoined_participants_are_asked_by_new_studies_again(make_participant, purposes):
    out, back = make_participant("out"), make_participant("back")
    for p in (out, back):
        services.participant_withdraw(participant=p, level="no_contact")
    services.participant_rejoin(participant=_refresh(back))
    study = services.study_submit(identifier="s", title="T", institution="U", commercial=False,
                                  uses=[{"permission": "DUO:0000006"}])
    services.study_use_decide(use_id=study.uses.get().pk, approve=True, member=None)
    services.consent_requests_create(use_id=study.uses.get().pk)
    assert list(ConsentRequest.objects.values_list("participant__user__username", flat=True)) == ["back"]


# Requests grant what they show -------------------------------------------------------------


@pytest.fixture
def cancer_study(db, purposes):
    Disease.objects.create(id=CANCER, label="cancer")
    study = services.study_submit(identifier="cancer-genomics", title="Cancer genomics", institution="U",
                                  commercial=False, uses=[{"permission": "DUO:0000007", "disease_id": CANCER}])
    services.study_use_decide(use_id=study.uses.get().pk, approve=True, member=None)
    services.consent_requests_create(use_id=study.uses.get().pk)  # the task approval queues on commit
    return study


def _other_cancer_study():
    study = services.study_submit(identifier="other-cancer", title="Another cancer study", institution="V",
                                  commercial=False, uses=[{"permission": "DUO:0000007", "disease_id": CANCER}])
    services.study_use_decide(use_id=study.uses.get().pk, approve=True, member=None)
    services.consent_requests_create(use_id=study.uses.get().pk)  # the task approval queues on commit
    return study


def test_a_disease_specific_request_offers_exactly_the_disease(participant, cancer_study):
    request = participant.requests.get()
    # The standing purpose is DS on cancer, made because the catalogue lacked it; never HMB.
    assert (request.purpose.permission_id, request.purpose.disease_id) == ("DUO:0000007", CANCER)
    assert request.purpose.disease_label == "cancer" and not request.purpose.modifiers.exists()
    only = request.study_purpose
    assert (only.permission_id, only.disease_id, only.study) == ("DUO:0000007", CANCER, cancer_study)
    assert list(only.modifiers.values_list("id", flat=True)) == ["DUO:0000027"]
    assert only.modifier_params == {"DUO:0000027": {"project": "cancer-genomics"}}


def test_this_study_only_permits_that_study_and_no_other(participant, cancer_study, custodian, api):
    services.sample_register(custodian=custodian, identifier="S-1", participant=participant, kind="blood")
    request = participant.requests.get()
    services.consent_request_answer(participant=participant, request_id=request.pk, grant=True, scope="study")
    consent = Consent.objects.get(participant=participant)
    assert consent.purpose == request.study_purpose
    document = services.identity_selectors.credential_document(credential_id=consent.credential_id)
    assert document["credentialSubject"]["study"] == "cancer-genomics"
    assert document["credentialSubject"]["dataUseModifiers"] == ["DUO:0000027"]
    assert check(api, "S-1", study="cancer-genomics", purpose="DUO:0000007")[:2] == ("permit", ["consent_active"])
    _other_cancer_study()
    assert check(api, "S-1", study="other-cancer", purpose="DUO:0000007")[:2] == ("deny", ["other_project"])
    # Not a standing consent to anything broader either.
    services.study_submit(identifier="hmb-2", title="H", institution="U", commercial=False,
                          uses=[{"permission": "DUO:0000006"}])
    assert check(api, "S-1", study="hmb-2", purpose="DUO:0000006")[0] == "deny"


def test_the_standing_answer_covers_that_disease_for_any_study_and_nothing_broader(
        participant, cancer_study, custodian, api):
    services.sample_register(custodian=custodian, identifier="S-1", participant=participant, kind="blood")
    request = participant.requests.get()
    services.consent_request_answer(participant=participant, request_id=request.pk, grant=True, scope="standing")
    assert Consent.objects.get(participant=participant).purpose.disease_id == CANCER
    _other_cancer_study()
    assert check(api, "S-1", study="other-cancer", purpose="DUO:0000007")[0] == "permit"
    hmb = services.study_submit(identifier="hmb-2", title="H", institution="U", commercial=False,
                                uses=[{"permission": "DUO:0000006"}])
    services.study_use_decide(use_id=hmb.uses.get().pk, approve=True, member=None)
    assert check(api, "S-1", study="hmb-2", purpose="DUO:0000006")[:2] == ("deny", ["purpose_not_covered"])


def test_a_request_made_before_the_choice_still_grants_no_more_than_asked(participant, cancer_study, purposes):
    # A request written by the earlier code: its purpose was the narrowest catalogue one
    # that covers the use (HMB) and it had no study-only purpose.
    request = participant.requests.get()
    ConsentRequest.objects.filter(pk=request.pk).update(purpose=purposes["health-medical-research"],
                                                        study_purpose=None)
    services.consent_request_answer(participant=participant, request_id=request.pk, grant=True, scope="standing")
    granted = Consent.objects.get(participant=participant).purpose
    assert (granted.permission_id, granted.disease_id) == ("DUO:0000007", CANCER)


def test_a_gru_request_answered_for_this_study_only_is_not_gru_for_every_study(participant, purposes):
    study = services.study_submit(identifier="gru-study", title="G", institution="U", commercial=False,
                                  uses=[{"permission": "DUO:0000042"}])
    services.study_use_decide(use_id=study.uses.get().pk, approve=True, member=None)
    services.consent_requests_create(use_id=study.uses.get().pk)
    request = participant.requests.get()
    assert request.purpose.slug == "general-research"  # the catalogue's, exactly as asked
    services.consent_request_answer(participant=participant, request_id=request.pk, grant=True, scope="study")
    purpose = Consent.objects.get(participant=participant).purpose
    assert purpose.study == study and purpose.permission_id == "DUO:0000042"


def test_a_request_closes_when_a_covering_consent_is_given_by_other_means(participant, cancer_study, purposes):
    _other_cancer_study()
    first, second = participant.requests.order_by("pk")
    services.consent_request_answer(participant=participant, request_id=first.pk, grant=True, scope="standing")
    second.refresh_from_db()
    first.refresh_from_db()
    # The standing DS-cancer consent covers the other cancer study: nothing left to ask.
    assert (first.status, second.status) == ("granted", "covered")
    with pytest.raises(services.ConsentStateError, match="closed"):
        services.consent_request_answer(participant=participant, request_id=second.pk, grant=True, scope="study")


def test_a_consent_granted_on_the_consents_page_closes_the_requests_it_covers(participant, cancer_study, purposes):
    services.consent_grant(participant=participant, purpose=purposes["health-medical-research"])
    assert participant.requests.get().status == "covered"


def test_a_sample_registered_while_withdrawn_from_use_is_to_be_destroyed_too(donor, custodian, api):
    services.participant_withdraw(participant=donor, level="no_use")
    services.sample_register(custodian=custodian, identifier="S-late", participant=donor, kind="blood")
    feed = api.get("/api/v1/withdrawals").json()["instructions"]
    assert [(i["sample"], i["action"], i["status"]) for i in feed] == [
        ("S-1", "destroy", "open"), ("S-2", "destroy", "open"), ("S-late", "destroy", "open")]


def test_after_a_rejoin_a_consent_the_withdrawal_revoked_does_not_keep_studies_from_asking(donor):
    services.participant_withdraw(participant=donor, level="no_access")  # revokes HMB
    services.participant_rejoin(participant=_refresh(donor))
    study = services.study_submit(identifier="s2", title="T", institution="U", commercial=False,
                                  uses=[{"permission": "DUO:0000006"}])
    services.study_use_decide(use_id=study.uses.get().pk, approve=True, member=None)
    assert services.consent_requests_create(use_id=study.uses.get().pk) == 1
    # Without a rejoin, a consent once given and revoked is an answer: not asked again.
    other = services.participant_sign_up(username="other", password="a long test password 1")
    consent = services.consent_grant(participant=other, purpose=Purpose.objects.get(slug="health-medical-research"))
    services.consent_change(participant=other, consent_id=consent.pk, action="revoke")
    study = services.study_submit(identifier="s3", title="T", institution="U", commercial=False,
                                  uses=[{"permission": "DUO:0000006"}])
    services.study_use_decide(use_id=study.uses.get().pk, approve=True, member=None)
    services.consent_requests_create(use_id=study.uses.get().pk)
    assert not other.requests.exists()


def test_the_loaded_ontology_names_the_disease_not_the_study(participant, purposes):
    Disease.objects.create(id=CANCER, label="cancer")
    study = services.study_submit(identifier="x", title="X", institution="U", commercial=False, uses=[
        {"permission": "DUO:0000007", "disease_id": CANCER, "disease_label": "common cold"}])
    services.study_use_decide(use_id=study.uses.get().pk, approve=True, member=None)
    services.consent_requests_create(use_id=study.uses.get().pk)
    purpose = participant.requests.get().purpose
    assert purpose.disease_label == "cancer" and purpose.title == "Research on cancer"


def test_a_bulk_permit_needs_the_signed_status_to_agree_with_the_database(donor, api, approved_study):
    consent = donor.consents.get()
    # The signed revocation list says revoked; the consent row (altered, say) still says granted.
    services.identity_services.credential_revoke(credential_id=consent.credential_id)
    bulk = api.post("/api/v1/consent-checks/bulk", data=json.dumps(
        {"study": "hmb-study", "purpose": "DUO:0000006", "samples": ["S-1"]}), content_type="application/json").json()
    (result,) = bulk["results"]
    assert result["decision"] == "deny" and result["reasons"][0]["code"] == "credential_not_verified"
    assert "the signed status lists say it is revoked" in result["reasons"][0]["message"]
    assert check(api, "S-1")[:2] == ("deny", ["credential_not_verified"])  # as a single check says
