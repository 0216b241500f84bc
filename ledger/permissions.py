from django.conf import settings
from rest_framework.permissions import BasePermission

from ledger.models import Member


class LedgerReadPermission(BasePermission):
    """Anyone when settings.LEDGER_PUBLIC is true, else any authenticated API client."""

    def has_permission(self, request, view):
        return getattr(settings, "LEDGER_PUBLIC", False) or request.auth is not None


class LedgerEntryReadPermission(BasePermission):
    """The entries themselves (one, a run, or an entry bundle): consortium member nodes, or
    anyone when the log is public. A custodian reads checkpoints, proofs and hash tiles, and
    gets the receipts of its own checks in their answers, never other custodians' entries."""

    message = ("Ledger entries are read by consortium member nodes (or by anyone when the log is "
               "public); a custodian gets the receipts of its own checks in their answers.")

    def has_permission(self, request, view):
        return getattr(settings, "LEDGER_PUBLIC", False) or isinstance(request.auth, Member)
