"""Consortium member tokens: `Authorization: Bearer ledger-member-...`.

Only the SHA-256 of a token is stored (created by `manage.py create_member_token`).
Tokens without our prefix are left to the other authentication classes, so this class
can sit in front of them on the ledger's views.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from ledger.models import MemberToken
from ledger.services import MEMBER_TOKEN_PREFIX, token_hash


class MemberTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme != self.keyword or not token.startswith(MEMBER_TOKEN_PREFIX):
            return None
        row = (
            MemberToken.objects.select_related("member")
            .filter(token_hash=token_hash(token), revoked_at__isnull=True, member__active=True)
            .first()
        )
        if row is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked member token.", code="bad_token")
        # request.user stays anonymous: a member is an organisation, not a Django user.
        return (None, row.member)

    def authenticate_header(self, request):
        return 'Bearer realm="ledger"'


class MemberTokenScheme(OpenApiAuthenticationExtension):
    target_class = MemberTokenAuthentication
    name = "memberToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A member token from create_member_token."}
