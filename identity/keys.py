"""Encryption of the private keys the portal holds, under the key-encryption key (KEK).

Each secret is a JWE in compact form: alg "dir" (the KEK is the content key) and enc
"A256GCM". The header carries a short "kid" derived from the KEK, so a later KEK rotation
can tell which key wrapped a row. The KEK itself comes from settings and never reaches the
database.
"""

import base64
import hashlib
import hmac
import json

from django.conf import settings
from jwcrypto import jwe, jwk
from jwcrypto.common import JWException

ALG = "dir"
ENC = "A256GCM"


class SecretDecryptionError(ValueError):
    """The token is not a JWE this portal's KEK opens (wrong key, tampered or malformed)."""


def _b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _kek() -> tuple[jwk.JWK, str]:
    raw = _b64url_decode(settings.KEY_ENCRYPTION_KEY)
    if len(raw) != 32:
        raise ValueError("KEY_ENCRYPTION_KEY must be 32 bytes, base64url-encoded")
    key = jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(raw).decode().rstrip("="))
    kid = base64.urlsafe_b64encode(hashlib.sha256(b"kek-id:" + raw).digest()[:9]).decode()
    return key, kid


def encrypt_secret(plaintext: str) -> str:
    key, kid = _kek()
    token = jwe.JWE(
        plaintext.encode(),
        protected=json.dumps({"alg": ALG, "enc": ENC, "kid": kid}),
        algs=[ALG, ENC],
    )
    token.add_recipient(key)
    return token.serialize(compact=True)


def decrypt_secret(token: str) -> str:
    key, _ = _kek()
    message = jwe.JWE(algs=[ALG, ENC])
    try:
        message.deserialize(token, key=key)
        header = json.loads(message.objects["protected"])
    except (JWException, ValueError, TypeError, KeyError) as exc:
        raise SecretDecryptionError(f"cannot decrypt secret: {exc}") from None
    if header.get("alg") != ALG or header.get("enc") != ENC:
        raise SecretDecryptionError("cannot decrypt secret: unexpected JWE algorithm")
    return message.payload.decode()


def document_digest(document) -> bytes | None:
    """SHA-256 of a JSON document's canonical text (sorted keys, no spaces), or None for
    something that is not JSON."""
    try:
        text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def attestation_mac(digest: bytes) -> str:
    """An HMAC-SHA256 tag over a document digest, under a key derived from the KEK.

    The portal tags each credential it signs; the tag lives in the database beside the
    document, the key never does. So a tag that matches proves the stored document is
    byte for byte what the portal signed, and a document altered in the database no longer
    matches. Another KEK means tags no longer match: verification then falls back to
    checking the proof, it never fails open.
    """
    raw = _b64url_decode(settings.KEY_ENCRYPTION_KEY)
    key = hmac.new(raw, b"consent-portal credential attestation v1", hashlib.sha256).digest()
    return hmac.new(key, digest, hashlib.sha256).hexdigest()
