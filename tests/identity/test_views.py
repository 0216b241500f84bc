import hashlib
import json

import pytest

from identity import selectors, services, vocabulary

pytestmark = pytest.mark.urls("tests.identity.urls")


def test_status_list_is_public_json_with_etag_and_cache_control(client, consent_credential):
    response = client.get("/credentials/status/revocation")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "public, max-age=60"
    document, etag = selectors.status_list_document(purpose="revocation")
    assert response["ETag"] == etag and etag.startswith('"') and etag.endswith('"')
    assert response["Access-Control-Allow-Origin"] == "*"
    # The ETag is a hash of the exact bytes served.
    assert etag.strip('"') == hashlib.sha256(response.content).hexdigest()[: len(etag) - 2]
    assert json.loads(response.content) == document
    assert response.json()["credentialSubject"]["statusPurpose"] == "revocation"
    assert (
        client.get("/credentials/status/suspension").json()["credentialSubject"]["statusPurpose"]
        == "suspension"
    )


def test_if_none_match_gets_304_until_the_list_changes(client, consent_credential):
    etag = client.get("/credentials/status/suspension")["ETag"]
    cached = client.get("/credentials/status/suspension", HTTP_IF_NONE_MATCH=etag)
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached["ETag"] == etag and cached["Cache-Control"] == "public, max-age=60"
    assert (
        client.get(
            "/credentials/status/suspension", HTTP_IF_NONE_MATCH='"something-else"'
        ).status_code
        == 200
    )

    services.credential_suspend(credential_id=consent_credential.id)
    changed = client.get("/credentials/status/suspension", HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200
    assert changed["ETag"] != etag
    assert (
        client.get("/credentials/status/suspension", HTTP_IF_NONE_MATCH=changed["ETag"]).status_code
        == 304
    )


def test_status_list_exists_before_any_credential(client, db):
    response = client.get("/credentials/status/revocation")
    assert response.status_code == 200
    assert response.json()["type"] == ["VerifiableCredential", "StatusList2021Credential"]


def test_unknown_purpose_is_404(client, db):
    assert client.get("/credentials/status/expiry").status_code == 404
    assert client.get("/credentials/status/").status_code == 404


def test_documents_are_read_only(client, consent_credential):
    assert client.post("/credentials/status/revocation").status_code == 405
    assert client.head("/credentials/status/revocation").status_code == 200


def test_the_url_a_credential_names_is_the_url_that_serves_its_list(
    client, settings, consent_credential
):
    list_url = consent_credential.document["credentialStatus"]["statusListCredential"]
    assert list_url.startswith(settings.SITE_URL)
    response = client.get(list_url[len(settings.SITE_URL) :])
    assert response.status_code == 200
    assert response.json()["id"] == list_url


def test_consent_context_is_served_as_json_ld_and_matches_the_inline_copy(
    client, settings, consent_credential
):
    response = client.get("/credentials/contexts/consent/v1")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/ld+json"
    assert response["ETag"]
    document = response.json()
    assert document == vocabulary.context_document()
    assert document["@context"] == consent_credential.document["@context"][2]
    # The vocabulary namespace is one fixed IRI; only the document's address is per site.
    assert document["@context"]["cpv"] == "https://w3id.org/biobank-consent/v1#"
    assert (
        vocabulary.consent_context_url() == f"{settings.SITE_URL}/credentials/contexts/consent/v1"
    )
    assert (
        client.get(
            "/credentials/contexts/consent/v1", HTTP_IF_NONE_MATCH=response["ETag"]
        ).status_code
        == 304
    )
