"""POST /api/v1/credentials/verify: VCs and VPs, LD proofs and JWTs, check by check."""

import json
import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from jwcrypto import jwk

from consent_portal import services as portal_services
from identity import didkit_backend, jwt, services
from identity.keys import decrypt_secret
from identity.models import StatusList
from tests.identity.helpers import CONSENT_CLAIMS, resign

URL = "/api/v1/credentials/verify"


@pytest.fixture
def api(db):
    _, token = portal_services.custodian_create(name="Verifier biobank")
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def verify(api, verifiable, **extra):
    return api.post(URL, data=json.dumps({"verifiable": verifiable, **extra}), content_type="application/json")


def test_a_credential_we_issued_verifies_check_by_check(api, consent_credential):
    response = verify(api, consent_credential.document)
    assert response.status_code == 200
    body = response.json()
    assert body["kind"] == "credential" and body["format"] == "ldp" and body["verified"] is True
    assert body["checks"] == {"signature": "ok", "issuer_trusted": "ok", "not_expired": "ok", "status": "active"}


@pytest.mark.parametrize("change, check", [
    ("bad-signature", "signature"), ("untrusted", "issuer_trusted"), ("unknown-term", "signature"),
    ("malformed-did", "signature"), ("revoked", "status"), ("suspended", "status"), ("expired", "not_expired"),
])
def test_each_failure_names_its_check(api, consent_credential, change, check):
    document = json.loads(json.dumps(consent_credential.document))
    if change == "bad-signature":
        document["credentialSubject"]["purpose"] = "DUO:0000006"
    elif change == "untrusted":
        document = resign(document, jwk=didkit_backend.generate_ed25519_jwk())
    elif change == "unknown-term":
        # didkit will not even sign it; pyld's strict expansion names the term.
        document["credentialSubject"]["favouriteColour"] = "blue"
    elif change == "malformed-did":
        document["issuer"] = "did:nope:"
    elif change == "revoked":
        services.credential_revoke(credential_id=consent_credential.id)
    elif change == "suspended":
        services.credential_suspend(credential_id=consent_credential.id)
    elif change == "expired":
        document = resign(document, expirationDate="2020-01-01T00:00:00Z")
    response = verify(api, document)
    assert response.status_code == 200
    body = response.json()
    assert body["verified"] is False
    failed = {name for name, value in body["checks"].items() if value != "ok" and value != "active"}
    assert check in failed
    assert any(error.startswith(f"{check}:") for error in body["errors"])
    if change == "unknown-term":
        assert "favouriteColour" in body["checks"]["signature"]


def test_a_missing_status_list_fails_closed(api, consent_credential):
    StatusList.objects.filter(purpose="suspension").update(credential="")
    body = verify(api, consent_credential.document).json()
    assert body["verified"] is False and body["checks"]["status"] == "unknown"


def test_a_tampered_status_list_fails_closed(api, consent_credential):
    row = StatusList.objects.get(purpose="revocation")
    document = json.loads(row.credential)
    document["issuanceDate"] = "2020-01-01T00:00:00Z"
    StatusList.objects.filter(pk=row.pk).update(credential=json.dumps(document))
    body = verify(api, consent_credential.document).json()
    assert body["verified"] is False and body["checks"]["status"] == "unknown"


class Holder:
    def __init__(self):
        self.key = jwk.JWK.generate(kty="EC", crv="P-256")
        self.did = didkit_backend.did_key_from_jwk(self.key.export_public())

    def jwt_vp(self, *, nonce, aud, credentials=()):
        now = int(time.time())
        claims = {"iss": self.did, "aud": aud, "nonce": nonce, "iat": now, "exp": now + 300,
                  "vp": {"@context": ["https://www.w3.org/2018/credentials/v1"], "type": ["VerifiablePresentation"],
                         "holder": self.did, "verifiableCredential": list(credentials)}}
        return jwt.sign(claims, private_jwk=self.key.export_private(), kid=f"{self.did}#{self.did[8:]}")


def test_a_jwt_presentation_checks_challenge_domain_holder_and_credentials(api, consent_credential):
    holder = Holder()
    token = holder.jwt_vp(nonce="c-1", aud="verifier.test", credentials=[consent_credential.document])
    body = verify(api, token, challenge="c-1", domain="verifier.test").json()
    assert body["kind"] == "presentation" and body["format"] == "jwt"
    assert body["verified"] is True, body["errors"]
    assert body["checks"] == {"challenge": "ok", "domain": "ok", "signature": "ok", "holder": "ok"}
    assert body["credentials"][0]["checks"]["status"] == "active"
    # The same challenge answered again: a replay.
    again = verify(api, token, challenge="c-1", domain="verifier.test").json()
    assert again["verified"] is False and again["checks"]["challenge"].startswith("failed")


@pytest.mark.parametrize("expected, check", [({"challenge": "other", "domain": "verifier.test"}, "challenge"),
                                             ({"challenge": "c-2", "domain": "evil.test"}, "domain"),
                                             ({}, "challenge")])
def test_a_presentation_for_another_challenge_or_domain_fails(api, expected, check):
    token = Holder().jwt_vp(nonce="c-2", aud="verifier.test")
    body = verify(api, token, **expected).json()
    assert body["verified"] is False and body["checks"][check].startswith("failed")


def test_a_presentation_signed_by_someone_else_fails_the_holder_check(api):
    holder, other = Holder(), Holder()
    now = int(time.time())
    claims = {"iss": holder.did, "aud": "v.test", "nonce": "c-3", "iat": now, "exp": now + 300,
              "vp": {"@context": ["https://www.w3.org/2018/credentials/v1"], "type": ["VerifiablePresentation"],
                     "holder": holder.did}}
    token = jwt.sign(claims, private_jwk=other.key.export_private(), kid=f"{other.did}#{other.did[8:]}")
    body = verify(api, token, challenge="c-3", domain="v.test").json()
    assert body["verified"] is False and body["checks"]["holder"].startswith("failed")


def test_an_ld_presentation_with_a_revoked_credential_names_it(api, consent_credential, subject):
    services.credential_revoke(credential_id=consent_credential.id)
    key = decrypt_secret(subject.encrypted_jwk)
    presentation = didkit_backend.issue_presentation(
        {"@context": ["https://www.w3.org/2018/credentials/v1"], "type": ["VerifiablePresentation"],
         "holder": subject.did, "verifiableCredential": [consent_credential.document]},
        jwk=key, verification_method=didkit_backend.verification_method(key), challenge="c-4", domain="v.test",
    )
    body = verify(api, presentation, challenge="c-4", domain="v.test").json()
    assert body["format"] == "ldp" and body["checks"]["signature"] == "ok" and body["checks"]["holder"] == "ok"
    assert body["verified"] is False
    assert "credentials[0].status: the credential is revoked" in body["errors"]


def test_a_jwt_credential_from_an_untrusted_issuer_fails(api):
    key = jwk.JWK.generate(kty="OKP", crv="Ed25519")
    did = didkit_backend.did_key_from_jwk(key.export_public())
    now = int(time.time())
    token = jwt.sign({"iss": did, "nbf": now, "exp": now + 60, "vc": {
        "@context": ["https://www.w3.org/2018/credentials/v1"], "type": ["VerifiableCredential"],
        "credentialSubject": {"id": "did:example:x"}}}, private_jwk=key.export_private(), kid=f"{did}#{did[8:]}")
    body = verify(api, token).json()
    assert body["kind"] == "credential" and body["format"] == "jwt"
    assert body["checks"]["signature"] == "ok" and body["checks"]["issuer_trusted"].startswith("failed")


@pytest.mark.parametrize("body", [{}, {"verifiable": 42}, {"verifiable": "not a jwt"}, {"verifiable": []}])
def test_malformed_requests_are_400_naming_the_field(api, body):
    response = api.post(URL, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid" and "verifiable" in response.json()["fields"]


def test_a_10_mb_body_is_413(api):
    response = api.post(URL, data=json.dumps({"verifiable": {"x": "a" * 10_000_000}}),
                        content_type="application/json")
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"


def test_the_api_needs_a_token(db):
    assert Client().post(URL, data="{}", content_type="application/json").status_code in (401, 403)


def test_the_selector_for_the_custodian_check_reads_the_same_checks(consent_credential):
    from identity import selectors

    result = selectors.verifiable_verify(submitted=consent_credential.document)
    assert result["verified"] and result["checks"]["status"] == "active"
    services.credential_suspend(credential_id=consent_credential.id)
    assert selectors.verifiable_verify(submitted=consent_credential.document)["checks"]["status"] == "suspended"


def test_expired_by_time_passing(api, subject):
    credential = services.credential_issue(
        subject_did=subject.did, credential_type="ConsentCredential", claims=dict(CONSENT_CLAIMS),
        expires_at=timezone.now() + timedelta(seconds=2),
    )
    assert verify(api, credential.document).json()["verified"] is True
    time.sleep(2.2)
    assert verify(api, credential.document).json()["checks"]["not_expired"].startswith("failed")
