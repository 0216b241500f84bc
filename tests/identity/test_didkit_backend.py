import asyncio
import json

import pytest

from identity import didkit_backend


def test_keys_dids_and_verification_methods():
    jwk = didkit_backend.generate_ed25519_jwk()
    key = json.loads(jwk)
    assert (key["kty"], key["crv"]) == ("OKP", "Ed25519") and key["d"] and key["x"]
    did = didkit_backend.did_key_from_jwk(jwk)
    assert did.startswith("did:key:z6Mk")
    assert didkit_backend.verification_method(jwk) == f"{did}#{did.removeprefix('did:key:')}"


def test_didkit_errors_become_credential_errors():
    assert issubclass(didkit_backend.CredentialError, ValueError)
    jwk = didkit_backend.generate_ed25519_jwk()
    credential = {
        "@context": ["https://www.w3.org/2018/credentials/v1"],
        "id": "urn:uuid:00000000-0000-4000-8000-000000000000",
        "type": ["VerifiableCredential"],
        "issuer": didkit_backend.did_key_from_jwk(jwk),
        "issuanceDate": "2026-01-01T00:00:00Z",
        "credentialSubject": {"id": "did:example:x", "undefinedTerm": 1},
    }
    with pytest.raises(didkit_backend.CredentialError, match="Expansion failed"):
        didkit_backend.issue_credential(
            credential, jwk=jwk, verification_method=didkit_backend.verification_method(jwk)
        )
    with pytest.raises(didkit_backend.CredentialError):
        didkit_backend.did_key_from_jwk('{"kty":"oops"}')
    with pytest.raises(didkit_backend.CredentialError):
        didkit_backend.resolve_did("did:key:zNotAKey")


def test_only_offline_did_methods_are_resolved():
    with pytest.raises(didkit_backend.CredentialError, match="offline"):
        didkit_backend.resolve_did("did:web:example.com")
    with pytest.raises(didkit_backend.CredentialError, match="offline"):
        didkit_backend.verify_credential({"issuer": "did:web:example.com", "proof": {}})


def test_sync_functions_work_inside_a_running_event_loop():
    jwk = didkit_backend.generate_ed25519_jwk()

    async def from_async_code():
        return didkit_backend.verification_method(jwk)

    assert asyncio.run(from_async_code()).startswith(didkit_backend.did_key_from_jwk(jwk))


def _signed(jwk: str) -> dict:
    issuer = didkit_backend.did_key_from_jwk(jwk)
    return didkit_backend.issue_credential(
        {
            "@context": ["https://www.w3.org/2018/credentials/v1"],
            "id": "urn:uuid:00000000-0000-4000-8000-000000000001",
            "type": ["VerifiableCredential"],
            "issuer": issuer,
            "issuanceDate": "2026-01-01T00:00:00Z",
            "credentialSubject": {"id": "did:example:x"},
        },
        jwk=jwk, verification_method=didkit_backend.verification_method(jwk),
    )


def test_a_started_verification_answers_as_verify_credential_does():
    jwk = didkit_backend.generate_ed25519_jwk()
    signed = _signed(jwk)
    wait = didkit_backend.verify_credential_begin(signed)
    result = wait()
    assert result == didkit_backend.verify_credential(signed)
    assert "proof" in result["checks"] and not result["errors"]
    tampered = {**signed, "issuanceDate": "2026-01-02T00:00:00Z"}
    assert didkit_backend.verify_credential_begin(tampered)()["errors"]
    # A DID that would need the network is refused before anything starts.
    with pytest.raises(didkit_backend.CredentialError, match="offline"):
        didkit_backend.verify_credential_begin({"issuer": "did:web:example.com", "proof": {}})

    async def from_async_code():
        return didkit_backend.verify_credential_begin(signed)()

    assert asyncio.run(from_async_code()) == didkit_backend.verify_credential(signed)
