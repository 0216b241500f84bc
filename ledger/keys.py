"""The checkpoint signing key: made on first use, its private half kept only as a JWE.

The JWE is compact, alg "dir", enc "A256GCM", under settings.KEY_ENCRYPTION_KEY, which
never lives in the database. Services sign with it; selectors publish its verifier key.
"""

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from django.conf import settings
from django.db import IntegrityError, transaction
from jwcrypto import jwe, jwk

from ledger import note
from ledger.models import LogKey


def _kek() -> jwk.JWK:
    raw = settings.KEY_ENCRYPTION_KEY
    secret = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    return jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(secret).decode().rstrip("="))


def log_private_key(key: LogKey) -> Ed25519PrivateKey:
    token = jwe.JWE()
    token.deserialize(key.encrypted_private_key, key=_kek())
    private = Ed25519PrivateKey.from_private_bytes(token.payload)
    # A swapped ciphertext would sign checkpoints nobody can verify.
    if note.public_key_bytes(private) != bytes(key.public_key):
        raise ValueError(f"ledger key {key.name!r}: private key does not match the public key")
    return private


def ledger_key_get_or_create() -> LogKey:
    """The key named settings.LEDGER_KEY_NAME, generated on first use."""
    name = settings.LEDGER_KEY_NAME
    key = LogKey.objects.filter(name=name).first()
    if key is not None:
        return key
    note.check_key_name(name)
    private = Ed25519PrivateKey.generate()
    token = jwe.JWE(
        private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
        protected={"alg": "dir", "enc": "A256GCM"},
    )
    token.add_recipient(_kek())
    try:
        with transaction.atomic():
            return LogKey.objects.create(
                name=name,
                public_key=note.public_key_bytes(private),
                encrypted_private_key=token.serialize(compact=True),
            )
    except IntegrityError:
        # Another process made it first; everyone signs with that one.
        return LogKey.objects.get(name=name)


# Verifier keys by key name, once read: a key row, once made, never changes (a new key
# means a new name), so receipts, checkpoints and the API need not read it every time.
_verifier_keys: dict[str, str] = {}


def ledger_verifier_key() -> str:
    name = settings.LEDGER_KEY_NAME
    verifier = _verifier_keys.get(name)
    if verifier is None:
        key = ledger_key_get_or_create()
        verifier = _verifier_keys[key.name] = note.verifier_key(key.name, bytes(key.public_key))
    return verifier
