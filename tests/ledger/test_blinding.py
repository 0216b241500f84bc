"""Blinded entries: a reader sees commitments, the entitled holder of an opening can prove
what an entry commits to, and the ledger refuses identifiers in the clear."""

import json

import pytest

from ledger import blinding, services
from ledger.models import Entry, EntryOpenings

pytestmark = pytest.mark.django_db


def test_an_opening_opens_its_commitment_and_nothing_else():
    commitments, openings = blinding.blind({"participant": "3f1c", "custodian": 7})
    leaf = {"kind": "x", "commit": commitments}
    assert blinding.opening_check(leaf, "participant", openings["participant"]) == "3f1c"
    assert blinding.opening_check(leaf, "custodian", openings["custodian"]) == 7
    forged = {**openings["custodian"], "value": 8}
    with pytest.raises(blinding.OpeningError, match="does not open"):
        blinding.opening_check(leaf, "custodian", forged)
    # An opening moved to another field does not open it: the field is hashed in.
    with pytest.raises(blinding.OpeningError, match="does not open"):
        blinding.opening_check(leaf, "custodian", {"value": 7, "salt": openings["participant"]["salt"]})
    with pytest.raises(blinding.OpeningError, match="commits to no sample"):
        blinding.opening_check(leaf, "sample", openings["custodian"])
    with pytest.raises(blinding.OpeningError, match="16-byte base64url salt"):
        blinding.opening_check(leaf, "custodian", {"value": 7, "salt": "short"})


def test_two_commitments_to_one_value_share_nothing():
    first, _ = blinding.blind({"participant": "3f1c"})
    second, _ = blinding.blind({"participant": "3f1c"})
    assert first["participant"] != second["participant"]


@pytest.mark.parametrize("payload", [
    {"participant": "p-1"},
    {"custodianId": 3},
    {"sample-id": "S-1"},
    {"nested": {"credential": "x"}},
    {"note": "urn:uuid:0b6f3f3e-3c33-4c5e-9d3b-6f0a4c1d2e3f"},
    {"note": "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"},
    {"list": ["0b6f3f3e-3c33-4c5e-9d3b-6f0a4c1d2e3f"]},
])
def test_the_ledger_refuses_who_in_the_clear(payload):
    with pytest.raises(ValueError, match="names who in the clear"):
        services.entry_append(kind="consent.granted", payload=payload)
    assert not Entry.objects.exists()


def test_the_commit_field_is_the_ledgers_own():
    with pytest.raises(ValueError, match="payload.commit"):
        services.entry_append(kind="consent.granted", payload={"commit": {"participant": "0" * 64}})


def test_personal_data_is_refused_even_when_committed():
    with pytest.raises(ValueError, match="personal data"):
        services.entry_append(kind="consent.granted", payload={}, committed={"email": "ada@example.org"})
    assert not EntryOpenings.objects.exists()


def test_erasure_deletes_openings_by_subject_and_leaves_the_entries():
    kept = services.entry_append(kind="consent.granted", payload={}, committed={"participant": "a"}, subject="a")
    gone = services.entry_append(kind="consent.granted", payload={}, committed={"participant": "b"}, subject="b")
    assert services.openings_erase(subject="b") == 1
    assert set(EntryOpenings.objects.values_list("entry_id", flat=True)) == {kept.id}
    assert "commit" in json.loads(bytes(Entry.objects.get(pk=gone.pk).payload))
    with pytest.raises(ValueError):
        services.openings_erase(subject="")
