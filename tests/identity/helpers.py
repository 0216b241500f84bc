"""Shared test helpers (plain functions; fixtures live in conftest.py)."""

import copy
import json

from identity import didkit_backend
from identity.keys import decrypt_secret
from identity.models import IssuerKey

CONSENT_CLAIMS = {
    "purpose": "DUO:0000042",
    "purposeLabel": "general research use",
    "dataUseModifiers": ["DUO:0000021"],
    "study": "hmb-study",
}


def resign(document: dict, *, jwk: str | None = None, **changes) -> dict:
    """The document with changes, signed again (by the active issuer key unless a jwk is given)."""
    unsigned = copy.deepcopy(document)
    unsigned.pop("proof", None)
    unsigned.update(changes)
    if jwk is None:
        jwk = decrypt_secret(IssuerKey.objects.get(active=True).encrypted_jwk)
    unsigned["issuer"] = didkit_backend.did_key_from_jwk(jwk)
    return didkit_backend.issue_credential(
        unsigned, jwk=jwk, verification_method=didkit_backend.verification_method(jwk)
    )


def deep(document):
    return json.loads(json.dumps(document))
