"""What the identity benchmarks made cheap stays correct: the strict JSON-LD check cached by
claim-name shape, the one-query verification, issuance outside a transaction, and
credentials issued under the earlier (per-site) vocabulary namespace."""

import itertools

import pytest

from identity import jsonld, selectors, services, vocabulary
from identity.models import IssuedCredential
from tests.identity.helpers import CONSENT_CLAIMS, deep


def count_calls(monkeypatch, module, name: str) -> list:
    """Lets module.name run as before, recording its argument on each call."""
    calls = []
    real = getattr(module, name)

    def counting(document):
        calls.append(document)
        return real(document)

    monkeypatch.setattr(module, name, counting)
    return calls


@pytest.fixture
def expansions(monkeypatch):
    """Counts full pyld expansions."""
    return count_calls(monkeypatch, jsonld, "expand")


def _issue(subject, **claims):
    return services.credential_issue(
        subject_did=subject.did,
        credential_type="ConsentCredential",
        claims={**CONSENT_CLAIMS, **claims},
    )


def test_pyld_runs_once_per_claim_name_shape_of_what_we_issue(subject, expansions):
    first = _issue(subject)
    second = _issue(subject, purposeLabel="another label", study="another-study")
    assert len(expansions) == 1  # issuing: the second credential has the first one's shape
    assert selectors.credential_verify(document=first.document)["verified"]
    assert selectors.credential_verify(document=second.document)["verified"]
    # Verifying: the signed shape (with a proof) is checked once; the status lists are
    # checked once each (not credentials of our shape, so always in full, but cached by ETag).
    consent_expansions = [d for d in expansions if d.get("type", [None])[-1] == "ConsentCredential"]
    assert len(consent_expansions) == 2
    _issue(subject, disease="MONDO:0005015", purpose="DUO:0000007")  # a new shape: checked
    assert len([d for d in expansions if "credentialStatus" in d]) == 3


UNSAFE_CHANGES = [
    ("an undefined member", lambda d: d["credentialSubject"].update(shoeSize="42")),
    ("a purpose that is no IRI", lambda d: d["credentialSubject"].update(purpose="general")),
    ("an unknown consentStatus", lambda d: d["credentialSubject"].update(consentStatus="Maybe")),
    ("a node where a literal was", lambda d: d["credentialSubject"].update(purposeLabel={"@id": "x"})),
    ("an issuer that is no IRI", lambda d: d.update(issuer="our-portal")),
    ("an undefined type", lambda d: d["type"].append("MadeUpCredential")),
    (
        "a relative status list",
        lambda d: d["credentialStatus"].update(statusListCredential="status/revocation"),
    ),
    ("a context of our own making", lambda d: d["@context"][2].update(purpose="cpv:purpose")),
]


@pytest.mark.parametrize(("name", "change"), UNSAFE_CHANGES, ids=[n for n, _ in UNSAFE_CHANGES])
def test_documents_outside_the_issued_shape_always_get_the_full_check(
    subject, consent_credential, name, change
):
    assert jsonld._issued_shape(consent_credential.document) is not None
    jsonld.check(consent_credential.document)  # the shape is now known
    document = deep(consent_credential.document)
    change(document)
    assert jsonld._issued_shape(document) is None
    if name == "a context of our own making":
        jsonld.check(document)  # still valid JSON-LD, but checked in full, not by shape
        return
    with pytest.raises(jsonld.JsonLdError):
        jsonld.check(document)
    assert selectors.credential_verify(document=document)["verified"] is False


LITERALS = ["", " ", "a:b", "@id", "_:b0", "http://x y", "DUO:0000042", "ü\n\t", "#frag"]


def test_every_document_the_shape_accepts_passes_the_strict_check(subject, consent_credential):
    """The fast path's safety argument, exercised: values the shape lets through in literal
    positions, and the IRI forms it accepts, never make pyld's strict expansion fail."""
    base = deep(consent_credential.document)
    documents = []
    for literal, field in itertools.product(
        LITERALS, ["purposeLabel", "study", "studyTitle", "diseaseLabel", "biobank", "enrolledAt"]
    ):
        document = deep(base)
        document["credentialSubject"][field] = literal
        documents.append(document)
    for disease, modifiers, status in itertools.product(
        [None, "MONDO:0005015"], [[], ["DUO:0000021", "DUO:0000043"]], vocabulary_statuses()
    ):
        document = deep(base)
        subject_claims = document["credentialSubject"]
        subject_claims.update(dataUseModifiers=modifiers, consentStatus=status)
        if disease:
            subject_claims["disease"] = disease
        document["expirationDate"] = "2030-01-01T00:00:00Z"
        document["type"] = ["VerifiableCredential", "EnrolmentCredential"]
        documents.append(document)
    for document in documents:
        assert jsonld._issued_shape(document) is not None, document
        jsonld.expand(document)  # raises if the shape let through something pyld refuses


def vocabulary_statuses():
    return list(services.CONSENT_STATUSES)


def test_a_warm_verification_reads_the_database_once(consent_credential, django_assert_num_queries):
    assert selectors.credential_verify(document=consent_credential.document)["verified"]
    with django_assert_num_queries(1):
        assert selectors.credential_verify(document=consent_credential.document)["verified"]
    services.credential_revoke(credential_id=consent_credential.id)  # a new ETag is noticed
    result = selectors.credential_verify(document=consent_credential.document)
    assert result["checks"]["status"] == "revoked" and result["verified"] is False


@pytest.mark.django_db(transaction=True)
def test_issuance_outside_a_transaction_draws_again_after_a_collision(monkeypatch):
    subject = services.did_create()
    first = _issue(subject)
    draws = iter([first.status_index, first.status_index, 4242])
    monkeypatch.setattr(services.secrets, "randbelow", lambda n: next(draws))
    second = _issue(subject)  # first draw collides at insert; the retry asks, skips it
    assert second.status_index == 4242
    assert IssuedCredential.objects.count() == 2
    assert selectors.credential_verify(document=second.document)["verified"]


def test_credentials_issued_under_the_per_site_namespace_still_verify(
    settings, subject, monkeypatch
):
    old_namespace = f"{settings.SITE_URL}/credentials/contexts/consent/v1#"
    old_context = vocabulary.credential_context()
    old_context[2]["cpv"] = old_namespace
    monkeypatch.setattr(vocabulary, "credential_context", lambda: deep(old_context))
    old = _issue(subject)
    monkeypatch.undo()
    new = _issue(subject)
    assert old.document["@context"][2]["cpv"] == old_namespace
    assert new.document["@context"][2]["cpv"] == vocabulary.CONSENT_VOCABULARY
    # Both verify: the old one carries its own context inline.
    assert selectors.credential_verify(document=old.document)["verified"] is True
    assert selectors.credential_verify(document=new.document)["verified"] is True
    # ... and keep the IRIs they were issued with.
    [old_node], [new_node] = jsonld.expand(old.document), jsonld.expand(new.document)
    assert old_node["@type"][1] == old_namespace + "ConsentCredential"
    assert new_node["@type"][1] == "https://w3id.org/biobank-consent/v1#ConsentCredential"
    # The same on another deployment: the namespace does not follow SITE_URL any more.
    settings.SITE_URL = "https://biobank.example.org"
    assert vocabulary.credential_context()[2]["cpv"] == "https://w3id.org/biobank-consent/v1#"
    assert vocabulary.consent_context_url() == (
        "https://biobank.example.org/credentials/contexts/consent/v1"
    )


def test_a_proof_is_verified_once_per_document_and_any_change_is_verified_afresh(subject, monkeypatch):
    from identity import didkit_backend

    calls = count_calls(monkeypatch, didkit_backend, "verify_credential_begin")
    credential = _issue(subject)
    assert selectors.credential_verify(document=credential.document)["verified"]
    assert selectors.credential_verify(document=deep(credential.document))["verified"]
    ours = [c for c in calls if c["id"] == credential.id]
    assert len(ours) == 1  # the same bytes: the proof was checked once
    altered = deep(credential.document)
    altered["credentialSubject"]["purpose"] = "DUO:0000006"
    result = selectors.credential_verify(document=altered)
    assert len([c for c in calls if c["id"] == credential.id]) == 2 and result["verified"] is False
    assert result["checks"]["signature"].startswith("failed")
    # A failure is not remembered as a success, and trust is still decided on every call.
    assert selectors.credential_verify(document=altered)["verified"] is False
    services.issuer_rotate(distrust_previous=True)
    distrusted = selectors.credential_verify(document=credential.document)
    assert distrusted["verified"] is False and distrusted["checks"]["signature"] == "ok"


def test_credential_evidence_answers_as_verify_and_status_do(subject):
    credential = _issue(subject)
    evidence = selectors.credential_evidence(credential_id=credential.id)
    assert evidence["credential"] == credential.document
    assert evidence["verification"] == selectors.credential_verify(document=credential.document)
    assert evidence["credential_status"] == selectors.credential_status(credential_id=credential.id)
    services.credential_suspend(credential_id=credential.id)
    evidence = selectors.credential_evidence(credential_id=credential.id)
    assert evidence["credential_status"] == {"revoked": False, "suspended": True}
    assert evidence["verification"]["verified"] is False
    assert evidence["verification"]["checks"]["status"] == "suspended"
    assert selectors.credential_evidence(credential_id="urn:uuid:not-ours") is None


def test_a_stored_credential_we_signed_is_attested_and_an_altered_one_is_checked_in_full(
    subject, monkeypatch
):
    from identity import didkit_backend

    verified = count_calls(monkeypatch, didkit_backend, "verify_credential_begin")
    calls = _Ids(verified)
    credential = _issue(subject)
    assert len(credential.proof_mac) == 64
    evidence = selectors.credential_evidence(credential_id=credential.id)
    assert evidence["verification"]["verified"] is True
    assert credential.id not in calls  # the attestation matched: the proof was not re-checked

    # Someone with write access to the database changes the document but not the tag.
    altered = deep(credential.document)
    altered["credentialSubject"]["purpose"] = "DUO:0000006"
    IssuedCredential.objects.filter(pk=credential.pk).update(document=altered)
    evidence = selectors.credential_evidence(credential_id=credential.id)
    assert calls.count(credential.id) == 1  # checked in full, and refused
    assert evidence["verification"]["verified"] is False
    assert evidence["verification"]["checks"]["signature"].startswith("failed")

    # A forged tag on the genuine document only costs a full check, which passes.
    IssuedCredential.objects.filter(pk=credential.pk).update(document=credential.document, proof_mac="0" * 64)
    assert selectors.credential_evidence(credential_id=credential.id)["verification"]["verified"] is True
    assert calls.count(credential.id) == 2


class _Ids:
    """The ids of the documents in a list of recorded calls, read when asked."""

    def __init__(self, calls: list):
        self.calls = calls

    def __contains__(self, credential_id) -> bool:
        return self.count(credential_id) > 0

    def count(self, credential_id) -> int:
        return sum(1 for document in self.calls if document.get("id") == credential_id)


def test_a_didkit_error_met_while_waiting_is_a_failed_signature_and_nothing_is_remembered(subject, monkeypatch):
    from identity import didkit_backend

    credential = _issue(subject)

    def started(document):
        def wait():
            raise didkit_backend.CredentialError("the proof could not be checked")
        return wait

    monkeypatch.setattr(didkit_backend, "verify_credential_begin", started)
    result = selectors.credential_verify(document=deep(credential.document))
    assert result["verified"] is False
    assert result["checks"]["signature"] == "failed: the proof could not be checked"
    assert result["checks"]["issuer_trusted"] == "ok", result
    monkeypatch.undo()
    assert selectors.credential_verify(document=deep(credential.document))["verified"] is True


def test_a_database_error_while_didkit_verifies_waits_for_it_then_propagates(subject, monkeypatch):
    from django.db import OperationalError

    from identity import didkit_backend

    credential = _issue(subject)
    waited = []
    real = didkit_backend.verify_credential_begin

    def started(document):
        wait = real(document)
        return lambda: waited.append(True) or wait()

    def broken():
        raise OperationalError("connection lost")

    monkeypatch.setattr(didkit_backend, "verify_credential_begin", started)
    monkeypatch.setattr(selectors, "_verification_state", broken)
    with pytest.raises(OperationalError):
        selectors.credential_verify(document=deep(credential.document))
    assert waited == [True]
