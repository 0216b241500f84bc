"""Compact JWTs: reading claims and signing with a key the portal holds (jwcrypto).

Verification is didkit's (didkit_backend.verify_presentation / verify_credential_jwt); this
module only reads parts of a token and signs the portal's own custodial presentations,
which didkit cannot build because they carry a claim of ours ("decision").
"""

import base64
import json

from jwcrypto import jwk, jws
from jwcrypto.common import JWException

_ALGS = {("OKP", "Ed25519"): "EdDSA", ("EC", "P-256"): "ES256"}


class JwtFormatError(ValueError):
    """Not a compact JWS whose header and payload are JSON objects."""


def _part(token: str, index: int) -> dict:
    if not isinstance(token, str) or token.count(".") != 2:
        raise JwtFormatError("a JWT is three base64url parts separated by dots")
    part = token.split(".")[index]
    try:
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise JwtFormatError(f"a JWT part is not base64url JSON: {exc}") from None
    if not isinstance(value, dict):
        raise JwtFormatError("a JWT part is not a JSON object")
    return value


def header(token: str) -> dict:
    """The protected header, unverified."""
    return _part(token, 0)


def claims(token: str) -> dict:
    """The payload, unverified: read it only after didkit has verified the token."""
    return _part(token, 1)


def sign(payload: dict, *, private_jwk: str, kid: str) -> str:
    """A compact JWS (typ JWT) over the payload: EdDSA for Ed25519, ES256 for P-256."""
    try:
        key = jwk.JWK.from_json(private_jwk)
        alg = _ALGS[(key.get("kty"), key.get("crv"))]
        token = jws.JWS(json.dumps(payload, separators=(",", ":")).encode())
        token.add_signature(
            key, alg=alg, protected=json.dumps({"alg": alg, "typ": "JWT", "kid": kid})
        )
        return token.serialize(compact=True)
    except (KeyError, JWException, ValueError) as exc:
        raise JwtFormatError(f"cannot sign with this key: {exc}") from None
