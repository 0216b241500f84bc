import datetime as dt
import json
import re

import pytest
from django.db import transaction
from django.utils import timezone

from identity import didkit_backend, selectors, services, vocabulary
from identity.keys import decrypt_secret
from identity.models import IssuedCredential, IssuerKey
from tests.identity.helpers import CONSENT_CLAIMS, deep, resign


def test_a_consent_credential_has_the_documented_shape(settings, subject, consent_credential):
    document = consent_credential.document
    issuer = IssuerKey.objects.get(active=True)
    assert document["@context"][:2] == [
        "https://www.w3.org/2018/credentials/v1",
        "https://w3id.org/vc/status-list/2021/v1",
    ]
    assert document["@context"][2] == vocabulary.context_document()["@context"]
    assert (
        re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", document["id"])
        and document["id"] == consent_credential.id
    )
    assert document["type"] == ["VerifiableCredential", "ConsentCredential"]
    assert document["issuer"] == issuer.did
    assert document["credentialSubject"] == {
        "id": subject.did,
        **CONSENT_CLAIMS,
        "consentStatus": "ConsentGiven",
    }
    assert "expirationDate" not in document
    index = consent_credential.status_index
    assert document["credentialStatus"] == {
        "id": f"{settings.SITE_URL}/credentials/status/revocation#{index}",
        "type": "StatusList2021Entry",
        "statusPurpose": "revocation",
        "statusListIndex": str(index),
        "statusListCredential": f"{settings.SITE_URL}/credentials/status/revocation",
    }
    assert document["proof"]["type"] == "Ed25519Signature2018"
    assert document["proof"]["proofPurpose"] == "assertionMethod"
    assert document["proof"]["verificationMethod"] == issuer.verification_method
    assert consent_credential.subject_did == subject.did
    assert consent_credential.type == "ConsentCredential"
    assert consent_credential.issuer_key == issuer


def test_issuance_creates_one_issuer_key_on_first_use_and_reuses_it(subject):
    assert not IssuerKey.objects.exists()
    first = services.credential_issue(
        subject_did=subject.did, credential_type="EnrolmentCredential", claims={}
    )
    second = services.credential_issue(
        subject_did=subject.did, credential_type="EnrolmentCredential", claims={}
    )
    assert IssuerKey.objects.count() == 1
    assert first.document["issuer"] == second.document["issuer"] == IssuerKey.objects.get().did
    assert services.issuer_get_or_create() == IssuerKey.objects.get()


def test_only_one_issuer_key_can_be_active(db):
    from django.db import IntegrityError

    services.issuer_get_or_create()
    with pytest.raises(IntegrityError), transaction.atomic():
        IssuerKey.objects.create(
            did="did:key:other", verification_method="x", encrypted_jwk="x", active=True
        )


def test_an_issued_credential_verifies(consent_credential):
    result = selectors.credential_verify(document=consent_credential.document)
    assert result == {
        "verified": True,
        "checks": {
            "signature": "ok",
            "issuer_trusted": "ok",
            "not_expired": "ok",
            "status": "active",
        },
        "errors": [],
    }


def test_enrolment_credential_with_expiry_verifies(subject):
    expires = timezone.now() + dt.timedelta(days=365)
    credential = services.credential_issue(
        subject_did=subject.did,
        credential_type="EnrolmentCredential",
        claims={"biobank": "Test biobank", "enrolledAt": "2026-01-02T03:04:05Z"},
        expires_at=expires,
    )
    assert credential.document["type"] == ["VerifiableCredential", "EnrolmentCredential"]
    assert credential.document["expirationDate"] == expires.astimezone(dt.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert credential.expires_at == expires.replace(microsecond=0)
    assert selectors.credential_verify(document=credential.document)["verified"] is True


def test_a_tampered_credential_fails_the_signature_check(consent_credential):
    tampered = deep(consent_credential.document)
    tampered["credentialSubject"]["purpose"] = "DUO:0000006"
    result = selectors.credential_verify(document=tampered)
    assert result["verified"] is False
    assert result["checks"]["signature"].startswith("failed: ")
    assert result["checks"]["issuer_trusted"] == "ok"
    assert any(error.startswith("signature: ") for error in result["errors"])


def test_a_credential_without_a_proof_fails(consent_credential):
    unsigned = deep(consent_credential.document)
    del unsigned["proof"]
    result = selectors.credential_verify(document=unsigned)
    assert result["verified"] is False
    assert result["checks"]["signature"].startswith("failed: ")


def test_a_credential_from_an_untrusted_issuer_fails_even_with_a_valid_signature(
    consent_credential,
):
    stranger = didkit_backend.generate_ed25519_jwk()
    forged = resign(consent_credential.document, jwk=stranger)
    result = selectors.credential_verify(document=forged)
    assert result["checks"]["signature"] == "ok"
    assert result["checks"]["issuer_trusted"].startswith("failed: ")
    assert didkit_backend.did_key_from_jwk(stranger) in result["checks"]["issuer_trusted"]
    assert result["verified"] is False


def test_an_issuer_that_cannot_be_resolved_offline_is_refused_without_a_request(consent_credential):
    document = deep(consent_credential.document)
    document["issuer"] = "did:web:issuer.invalid"
    result = selectors.credential_verify(document=document)
    assert "cannot be resolved offline" in result["checks"]["signature"]
    assert result["verified"] is False


def test_an_expired_credential_fails(consent_credential):
    expired = resign(consent_credential.document, expirationDate="2020-01-01T00:00:00Z")
    result = selectors.credential_verify(document=expired)
    assert result["checks"]["signature"] == "ok"
    assert result["checks"]["issuer_trusted"] == "ok"
    assert result["checks"]["not_expired"] == "failed: expired at 2020-01-01T00:00:00Z"
    assert result["checks"]["status"] == "active"
    assert result["verified"] is False


def test_a_credential_expires_when_its_time_comes(subject, monkeypatch):
    expires = timezone.now() + dt.timedelta(hours=1)
    credential = services.credential_issue(
        subject_did=subject.did,
        credential_type="ConsentCredential",
        claims=dict(CONSENT_CLAIMS),
        expires_at=expires,
    )
    assert selectors.credential_verify(document=credential.document)["verified"] is True
    later = expires + dt.timedelta(seconds=1)
    monkeypatch.setattr(selectors.timezone, "now", lambda: later)
    result = selectors.credential_verify(document=credential.document)
    assert result["checks"]["not_expired"].startswith("failed: expired at ")
    assert result["verified"] is False


def test_issuance_refuses_a_past_or_naive_expiry(subject):
    for bad in (timezone.now() - dt.timedelta(seconds=1), dt.datetime(2100, 1, 1)):
        with pytest.raises(services.ClaimError) as info:
            services.credential_issue(
                subject_did=subject.did,
                credential_type="EnrolmentCredential",
                claims={},
                expires_at=bad,
            )
        assert info.value.field == "expires_at"


def test_credentials_signed_by_a_rotated_out_key_still_verify(subject, consent_credential):
    # What the rotation command will do: deactivate the key, the next use creates a new one.
    old = IssuerKey.objects.get(active=True)
    IssuerKey.objects.filter(pk=old.pk).update(active=False)
    services.status_list_sign(purpose="revocation")
    services.status_list_sign(purpose="suspension")
    new = IssuerKey.objects.get(active=True)
    assert new.did != old.did
    fresh = services.credential_issue(
        subject_did=subject.did, credential_type="EnrolmentCredential", claims={}
    )
    assert fresh.document["issuer"] == new.did
    assert selectors.status_list_document(purpose="revocation")[0]["issuer"] == new.did
    for credential in (consent_credential, fresh):
        assert selectors.credential_verify(document=credential.document)["verified"] is True
    assert selectors.trusted_issuer_dids() == {old.did, new.did}


@pytest.mark.parametrize(
    "credential_type, claims, field",
    [
        ("ConsentCredential", {"purposeLabel": "no purpose"}, "purpose"),
        ("ConsentCredential", {"purpose": "GRU"}, "purpose"),
        (
            "ConsentCredential",
            {"purpose": "DUO:0000042", "dataUseModifiers": ["IRB"]},
            "dataUseModifiers",
        ),
        ("ConsentCredential", {"purpose": "DUO:0000007", "disease": "diabetes"}, "disease"),
        (
            "ConsentCredential",
            {"purpose": "DUO:0000042", "consentStatus": "ConsentWithdrawn"},
            "consentStatus",
        ),
        (
            "ConsentCredential",
            {"purpose": "DUO:0000042", "favouriteColour": "blue"},
            "favouriteColour",
        ),
        ("EnrolmentCredential", {"id": "did:key:someone-else"}, "id"),
        ("PassportCredential", {}, "credential_type"),
    ],
)
def test_issuance_refuses_bad_claims_naming_the_field(subject, credential_type, claims, field):
    with pytest.raises(services.ClaimError) as info:
        services.credential_issue(
            subject_did=subject.did, credential_type=credential_type, claims=claims
        )
    assert info.value.field == field
    assert not IssuedCredential.objects.exists()


def test_disease_specific_consent_names_a_mondo_disease(subject):
    credential = services.credential_issue(
        subject_did=subject.did,
        credential_type="ConsentCredential",
        claims={
            "purpose": "DUO:0000007",
            "disease": "MONDO:0005015",
            "diseaseLabel": "diabetes mellitus",
        },
    )
    assert credential.document["credentialSubject"]["disease"] == "MONDO:0005015"
    assert selectors.credential_verify(document=credential.document)["verified"] is True


def test_issuance_is_part_of_the_callers_transaction(subject):
    with pytest.raises(RuntimeError), transaction.atomic():
        services.credential_issue(
            subject_did=subject.did, credential_type="EnrolmentCredential", claims={}
        )
        assert IssuedCredential.objects.count() == 1
        raise RuntimeError("the caller's next write failed")
    assert not IssuedCredential.objects.exists()


def test_selectors_read_documents_and_subjects(subject, consent_credential):
    other = services.did_create()
    services.credential_issue(
        subject_did=other.did, credential_type="EnrolmentCredential", claims={}
    )
    enrolment = services.credential_issue(
        subject_did=subject.did, credential_type="EnrolmentCredential", claims={}
    )
    assert (
        selectors.credential_document(credential_id=consent_credential.id)
        == consent_credential.document
    )
    assert list(selectors.credentials_for_subject(subject_did=subject.did)) == [
        consent_credential,
        enrolment,
    ]


def test_did_document_is_resolved_locally(subject):
    document = selectors.did_document(did=subject.did)
    assert document["id"] == subject.did
    [method] = document["verificationMethod"]
    assert method["controller"] == subject.did
    assert method["publicKeyJwk"]["x"] == json.loads(decrypt_secret(subject.encrypted_jwk))["x"]
    assert "d" not in method["publicKeyJwk"]
    assert method["id"] in document["assertionMethod"]
    with pytest.raises(didkit_backend.CredentialError, match="offline"):
        selectors.did_document(did="did:web:example.invalid")
