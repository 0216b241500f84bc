import base64
import copy
import hashlib
import json
import socket

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pyld import jsonld as pyld

from identity import didkit_backend, jsonld, selectors, services, vocabulary
from tests.identity.helpers import CONSENT_CLAIMS, deep, resign


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _b64url(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def test_every_credential_we_issue_expands_offline(no_network, subject):
    enrolment = services.credential_issue(
        subject_did=subject.did,
        credential_type="EnrolmentCredential",
        claims={"biobank": "Test biobank", "enrolledAt": "2026-01-02T03:04:05Z"},
    )
    consent = services.credential_issue(
        subject_did=subject.did,
        credential_type="ConsentCredential",
        claims={
            **CONSENT_CLAIMS,
            "studyTitle": "A study",
            "disease": "MONDO:0005015",
            "diseaseLabel": "diabetes",
        },
    )
    status_list, _ = selectors.status_list_document(purpose="revocation")
    for document in (enrolment.document, consent.document, status_list):
        [node] = jsonld.expand(document)
        assert "@id" in node
    [node] = jsonld.expand(consent.document)
    ns = "https://w3id.org/biobank-consent/v1#"
    assert node["@type"] == [
        "https://www.w3.org/2018/credentials#VerifiableCredential",
        ns + "ConsentCredential",
    ]
    [subject_node] = node["https://www.w3.org/2018/credentials#credentialSubject"]
    assert subject_node["https://w3id.org/dpv#hasPurpose"] == [
        {"@id": "http://purl.obolibrary.org/obo/DUO_0000042"}
    ]
    assert subject_node["https://w3id.org/dpv#hasConsentStatus"] == [
        {"@id": "https://w3id.org/dpv#ConsentGiven"}
    ]
    assert subject_node[ns + "dataUseModifier"] == [
        {"@id": "http://purl.obolibrary.org/obo/DUO_0000021"}
    ]
    assert subject_node[ns + "disease"] == [{"@id": "http://purl.obolibrary.org/obo/MONDO_0005015"}]
    [status] = node["https://www.w3.org/2018/credentials#credentialStatus"]
    assert status["@type"] == ["https://w3id.org/vc/status-list#StatusList2021Entry"]


def test_every_term_of_our_context_is_used_and_expands_to_an_absolute_iri(no_network):
    context = vocabulary.context_document()["@context"]
    terms = [
        t
        for t in context
        if not t.startswith("@") and t not in ("xsd", "dpv", "DUO", "MONDO", "cpv")
    ]
    for term in terms:
        document = {"@context": context, "@id": "urn:x:node", term: "urn:x:value"}
        [node] = pyld.expand(document, {"documentLoader": jsonld.document_loader})
        [iri] = [key for key in node if key != "@id"]
        assert iri.startswith(("https://w3id.org/dpv#", context["cpv"])), term


def test_a_document_with_an_undefined_term_is_refused(no_network, consent_credential):
    document = deep(consent_credential.document)
    document["credentialSubject"]["shoeSize"] = 42
    with pytest.raises(jsonld.JsonLdError, match="shoeSize") as info:
        jsonld.expand(document)
    assert info.value.term == "shoeSize"
    # ... by the verify path too, even when the issuer signed it that way.
    result = selectors.credential_verify(document=document)
    assert result["verified"] is False
    assert "undefined term 'shoeSize'" in result["checks"]["signature"]


def test_an_undefined_type_is_refused(no_network, consent_credential):
    document = deep(consent_credential.document)
    document["type"].append("MadeUpCredential")
    with pytest.raises(jsonld.JsonLdError, match="MadeUpCredential"):
        jsonld.expand(document)
    assert selectors.credential_verify(document=document)["verified"] is False


def test_a_context_we_hold_no_copy_of_is_refused_without_fetching(no_network, consent_credential):
    with pytest.raises(jsonld.RemoteDocumentRefused, match="never fetch"):
        jsonld.document_loader("https://www.w3.org/ns/did/v1")
    document = deep(consent_credential.document)
    document["@context"].append("https://example.org/contexts/extra.jsonld")
    with pytest.raises(jsonld.RemoteDocumentRefused, match="example.org"):
        jsonld.expand(document)
    result = selectors.credential_verify(document=document)
    assert result["verified"] is False and "example.org" in result["checks"]["signature"]


def test_the_loader_serves_our_copies(no_network, settings):
    for url in (
        vocabulary.CREDENTIALS_V1,
        vocabulary.STATUS_LIST_2021_V1,
        vocabulary.consent_context_url(),
    ):
        loaded = jsonld.document_loader(url)
        assert loaded["documentUrl"] == url
        assert "@context" in loaded["document"]
    # A context referenced by URL (not inline) resolves from the local copy too.
    document = {
        "@context": [vocabulary.CREDENTIALS_V1, vocabulary.consent_context_url()],
        "id": "urn:uuid:00000000-0000-4000-8000-000000000000",
        "type": ["VerifiableCredential", "ConsentCredential"],
        "credentialSubject": {"id": "did:key:z6Mkexample", "purpose": "DUO:0000006"},
    }
    [node] = jsonld.expand(document)
    assert (
        node["@type"][1] == "https://w3id.org/biobank-consent/v1#ConsentCredential"
    )


def _verify_ed25519_signature_2018_with_pyld(document: dict) -> None:
    """Checks didkit's proof with pyld canonicalisation over OUR context copies.

    Ed25519Signature2018 signs sha256(c14n(proof options)) + sha256(c14n(document)) as a
    detached, unencoded-payload JWS. If any local context expanded a term differently from
    didkit's built-in copy, the canonical N-Quads, and so the signature, would not match.
    """
    proof = copy.deepcopy(document["proof"])
    jws = proof.pop("jws")
    unsigned = {k: v for k, v in document.items() if k != "proof"}
    options = {"@context": document["@context"], **proof}
    data = (
        hashlib.sha256(jsonld.canonize(options).encode()).digest()
        + hashlib.sha256(jsonld.canonize(unsigned).encode()).digest()
    )
    header, payload, signature = jws.split(".")
    assert payload == "" and json.loads(_b64url(header)) == {
        "alg": "EdDSA",
        "b64": False,
        "crit": ["b64"],
    }
    did = proof["verificationMethod"].split("#")[0]
    [method] = didkit_backend.resolve_did(did)["verificationMethod"]
    public = Ed25519PublicKey.from_public_bytes(_b64url(method["publicKeyJwk"]["x"]))
    public.verify(_b64url(signature), header.encode() + b"." + data)  # raises if invalid


def test_local_context_copies_expand_exactly_like_didkits_built_in_ones(no_network, subject):
    """didkit signs what its built-in contexts expand to; pyld over our copies agrees."""
    from cryptography.exceptions import InvalidSignature

    consent = services.credential_issue(
        subject_did=subject.did,
        credential_type="ConsentCredential",
        claims={
            **CONSENT_CLAIMS,
            "studyTitle": "A study",
            "disease": "MONDO:0005015",
            "diseaseLabel": "d",
        },
    )
    enrolment = services.credential_issue(
        subject_did=subject.did,
        credential_type="EnrolmentCredential",
        claims={"biobank": "Test biobank", "enrolledAt": "2026-01-02T03:04:05Z"},
    )
    expiring = resign(consent.document, expirationDate="2099-01-01T00:00:00Z")
    status_list, _ = selectors.status_list_document(purpose="suspension")
    for document in (consent.document, enrolment.document, expiring, status_list):
        _verify_ed25519_signature_2018_with_pyld(document)
    # And the check has teeth: a changed claim no longer verifies.
    tampered = deep(consent.document)
    tampered["credentialSubject"]["purposeLabel"] = "something else"
    with pytest.raises(InvalidSignature):
        _verify_ed25519_signature_2018_with_pyld(tampered)


def test_the_w3c_copies_are_the_recorded_files():
    digests = {
        "credentials-v1.jsonld": "ab4ddd9a531758807a79a5b450510d61ae8d147eab966cc9a200c07095b0cdcc",
        "status-list-2021-v1.jsonld": "6dd06a52bedb771e059c1083ba8ba7848dce22f6b4a8cfa0b98ba3fc188870e4",
    }
    for name, digest in digests.items():
        assert hashlib.sha256((vocabulary.CONTEXTS_DIR / name).read_bytes()).hexdigest() == digest
