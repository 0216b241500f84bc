"""Custodian authentication: `Authorization: Bearer <token>`.

Tokens are random and shown once; the database keeps only their SHA-256, so a database
leak does not leak working tokens.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions


class CustodianTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme != self.keyword or not token.strip() or " " in token.strip():
            raise exceptions.AuthenticationFailed(
                "Authorization header must be 'Bearer <token>'.", code="bad_authorization_header"
            )
        from consent_portal.selectors import custodian_for_token

        custodian = custodian_for_token(token=token.strip())
        if custodian is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked token.", code="bad_token")
        return (custodian, custodian)

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class CustodianTokenScheme(OpenApiAuthenticationExtension):
    """Documents the bearer token in the OpenAPI schema."""

    target_class = CustodianTokenAuthentication
    name = "custodianToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A custodian token from create_custodian."}
