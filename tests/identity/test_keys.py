import base64
import json
import secrets

import pytest
from django.db import connection

from identity import services
from identity.keys import SecretDecryptionError, decrypt_secret, encrypt_secret
from identity.models import DidKey, IssuerKey
from tests.identity.helpers import CONSENT_CLAIMS


def test_encrypt_decrypt_round_trip_is_a_dir_a256gcm_compact_jwe():
    secret = '{"kty":"OKP","crv":"Ed25519","d":"secret-part"}'
    token = encrypt_secret(secret)
    assert decrypt_secret(token) == secret
    parts = token.split(".")
    assert len(parts) == 5 and parts[1] == ""  # compact; "dir" has no encrypted key
    header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    assert (header["alg"], header["enc"]) == ("dir", "A256GCM")
    assert "secret-part" not in token
    # A fresh IV every time: the same secret never encrypts to the same token.
    assert encrypt_secret(secret) != token


def test_decrypt_refuses_a_tampered_token():
    token = encrypt_secret("hello")
    header, key, iv, ciphertext, tag = token.split(".")
    flipped = ("A" if ciphertext[0] != "A" else "B") + ciphertext[1:]
    with pytest.raises(SecretDecryptionError):
        decrypt_secret(".".join([header, key, iv, flipped, tag]))
    with pytest.raises(SecretDecryptionError):
        decrypt_secret("not a jwe")


def test_decrypt_needs_the_same_key_encryption_key(settings):
    token = encrypt_secret("hello")
    settings.KEY_ENCRYPTION_KEY = (
        base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    )
    with pytest.raises(SecretDecryptionError):
        decrypt_secret(token)


def test_did_create_makes_an_ed25519_did_key_held_encrypted_by_the_portal(db):
    did_key = services.did_create()
    assert did_key.did.startswith("did:key:z6Mk")  # multicodec ed25519-pub
    assert did_key.custody == DidKey.Custody.PORTAL
    jwk = json.loads(decrypt_secret(did_key.encrypted_jwk))
    assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519") and jwk["d"]
    assert services.did_create().did != did_key.did


def _all_database_text() -> str:
    """Every value of every table, as text (bytes decoded leniently)."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, memoryview):
                        value = bytes(value)
                    if isinstance(value, bytes):
                        value = value.decode("latin-1")
                    chunks.append(str(value))
    return "\n".join(chunks)


def test_no_private_key_lands_in_the_database_in_plain_text(subject):
    services.credential_issue(
        subject_did=subject.did, credential_type="ConsentCredential", claims=dict(CONSENT_CLAIMS)
    )
    private_parts = [
        json.loads(decrypt_secret(row.encrypted_jwk))["d"]
        for row in [*DidKey.objects.all(), *IssuerKey.objects.all()]
    ]
    assert len(private_parts) == 2
    text = _all_database_text()
    for d in private_parts:
        assert d not in text
        assert base64.urlsafe_b64decode(d + "=").hex() not in text
    assert '"d"' not in text
