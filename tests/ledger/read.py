"""Test helpers reading what entries say: the kind lives only in the hashed payload."""

import json

from ledger.models import Entry
from ledger.selectors import entry_bytes


def payload(entry: Entry) -> dict:
    return json.loads(entry_bytes(entry_id=entry.id))


def of_kind(kind: str) -> list[Entry]:
    """Entries, pending or sealed, whose payload has this kind, in id order."""
    return [entry for entry in Entry.objects.order_by("id") if payload(entry)["kind"] == kind]


def kinds() -> list[str]:
    return [payload(entry)["kind"] for entry in Entry.objects.order_by("id")]
