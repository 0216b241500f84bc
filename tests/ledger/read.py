"""Test helpers reading what entries say: the kind lives only in the hashed payload."""

import json

from ledger.models import Entry
from ledger.selectors import entry_bytes  # noqa: F401 (read.entry_bytes)


def payload(entry: Entry) -> dict:
    return json.loads(entry_bytes(entry_id=entry.id))


def of_kind(kind: str) -> list[Entry]:
    """Entries, pending or sealed, whose payload has this kind, in id order."""
    return [entry for entry in Entry.objects.order_by("id") if payload(entry)["kind"] == kind]


def kinds() -> list[str]:
    return [payload(entry)["kind"] for entry in Entry.objects.order_by("id")]


def opened(entry: Entry) -> dict:
    """What the entry says, its commitments replaced by the values their kept openings
    prove (ledger.blinding): raises if an opening does not open its commitment."""
    from ledger import blinding
    from ledger.models import EntryOpenings

    leaf = payload(entry)
    openings = EntryOpenings.objects.filter(entry_id=entry.id).first()
    values = {field: blinding.opening_check(leaf, field, opening)
              for field, opening in (openings.openings if openings else {}).items()}
    return {**{k: v for k, v in leaf.items() if k != "commit"}, **values}
