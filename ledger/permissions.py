from django.conf import settings
from rest_framework.permissions import BasePermission


class LedgerReadPermission(BasePermission):
    """Anyone when settings.LEDGER_PUBLIC is true, else any authenticated API client."""

    def has_permission(self, request, view):
        return getattr(settings, "LEDGER_PUBLIC", False) or request.auth is not None
