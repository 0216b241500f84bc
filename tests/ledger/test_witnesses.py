"""One log, two `run_witness` processes on loopback, quorum 2, and fork attempts.

The log is this test process (its services and Celery tasks, in-process); each witness is
a separate process with its own SQLite state, speaking C2SP tlog-witness over HTTP.
"""

import base64

import pytest
from django.db import transaction

from ledger import cosign, merkle, note, selectors, services, tasks
from ledger.canonical import canonical_json
from ledger.keys import ledger_key_get_or_create, log_private_key
from ledger.models import Checkpoint, Cosignature, TreeState, WitnessRefusal
from tests.ledger import tamper

pytestmark = pytest.mark.django_db


def append(n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        services.entry_append(kind="consent.granted", payload={"n": f"p-{i}"})


def rewrite_log(index: int) -> None:
    """What a dishonest operator would do: change a sealed entry and rebuild every stored
    hash and the head so the database is self-consistent again."""
    with transaction.atomic():
        payload = canonical_json({"kind": "consent.granted", "participant": "rewritten"})
        tamper.payload_set(index, payload)
        TreeState.objects.filter(id=1).update(root_hash=tamper.tiles_rebuild())


def sign_checkpoint(size: int, root: bytes) -> str:
    key = ledger_key_get_or_create()
    body = note.checkpoint_body(note.parse_verifier_key(services.ledger_verifier_key()).name, size, root)
    return note.sign_note(body, key.name, log_private_key(key))


def test_two_witnesses_cosign_each_checkpoint_and_make_it_final(consortium):
    witnesses, members = consortium
    append(5)
    assert tasks.seal_pending() == 5  # pushes to both witnesses after sealing
    checkpoint = Checkpoint.objects.get(size=5)
    assert Cosignature.objects.filter(checkpoint=checkpoint).count() == 2
    assert selectors.checkpoint_final_latest() == checkpoint
    cosigned = selectors.checkpoint_cosigned_note(checkpoint=checkpoint)
    found = cosign.verify_cosignatures(cosigned, [w.verifier_key for w in witnesses])
    assert sorted(c.name for c in found) == ["witness.example/w1", "witness.example/w2"]
    # The log's own signature still verifies on the cosigned note.
    assert note.open_checkpoint(cosigned, [services.ledger_verifier_key()]).size == 5

    # The next checkpoint goes with a consistency proof from 5; both cosign again.
    append(3, start=5)
    tasks.seal_pending()
    assert selectors.checkpoint_final_latest().size == 8
    info = selectors.ledger_info()["witnesses"]
    assert info == {"quorum": 2, "registered": 2, "final_size": 8, "refusals": 0,
                    "latest_refusal": None}


def test_one_witness_short_of_quorum_is_not_final(consortium, settings):
    witnesses, members = consortium
    witnesses[1].stop()
    append(2)
    tasks.seal_pending()
    assert Cosignature.objects.count() == 1
    assert selectors.checkpoint_final_latest() is None
    assert not WitnessRefusal.objects.exists()  # down is not a refusal
    settings.LEDGER_WITNESS_QUORUM = 1
    assert selectors.checkpoint_final_latest().size == 2


def test_a_rewritten_log_is_refused_by_both_witnesses_and_the_log_records_it(consortium):
    witnesses, members = consortium
    append(8)
    tasks.seal_pending()
    assert selectors.checkpoint_final_latest().size == 8

    rewrite_log(index=2)
    append(2, start=8)
    tasks.seal_pending()  # signs checkpoint 10 over the rewritten tree and pushes it
    refusals = list(WitnessRefusal.objects.order_by("member_id"))
    assert [(r.member, r.size, r.status) for r in refusals] == [
        (members[0], 10, 422), (members[1], 10, 422),
    ]
    assert "not consistent" in refusals[0].detail
    assert not Cosignature.objects.filter(checkpoint__size=10).exists()
    # Still final at 8 only; the refusal is visible to the API and the dashboard.
    summary = selectors.ledger_info()["witnesses"]
    assert summary["final_size"] == 8 and summary["refusals"] == 2
    assert summary["latest_refusal"]["status"] == 422
    overview = selectors.witness_overview()
    assert [w["last_cosigned_size"] for w in overview["witnesses"]] == [8, 8]
    assert [w["refusals"] for w in overview["witnesses"]] == [1, 1]
    # The rewrite is also caught by the full audit: the stored checkpoints' roots differ.
    assert not services.ledger_verify().ok


def test_a_different_root_at_a_size_the_witnesses_cosigned_is_refused(consortium):
    witnesses, members = consortium
    append(4)
    tasks.seal_pending()
    append(2, start=4)
    tasks.seal_pending()
    assert selectors.checkpoint_final_latest().size == 6
    # A split view: the log re-signs size 6 with another root and asks again.
    forged_root = merkle.node_hash(b"\x00" * 32, b"\x01" * 32)
    Cosignature.objects.filter(checkpoint__size=6).delete()
    Checkpoint.objects.filter(size=6).update(root_hash=forged_root, note=sign_checkpoint(6, forged_root))
    outcome = services.ledger_witness_push()
    assert outcome == {"Biobank 1": "refused", "Biobank 2": "refused"}
    refusals = WitnessRefusal.objects.order_by("member_id")
    # Each witness first answered 409 with its size (6), then refused the other root.
    assert [(r.size, r.status, bytes(r.root_hash)) for r in refusals] == [(6, 409, forged_root)] * 2
    assert "different root" in refusals[0].detail


def test_witness_state_survives_a_restart_and_still_refuses_the_fork(start_witness, tmp_path, settings):
    settings.LEDGER_WITNESS_QUORUM = 1
    log_key = services.ledger_verifier_key()
    state, key_file = tmp_path / "w.sqlite3", tmp_path / "w.key"
    first = start_witness("witness.example/w1", [log_key], state=state, key_file=key_file)
    member = services.member_register(name="Biobank 1", verifier_key=first.verifier_key,
                                      witness_url=first.url)
    append(3)
    tasks.seal_pending()
    first.stop()
    again = start_witness("witness.example/w1", [log_key], state=state, key_file=key_file)
    assert again.verifier_key == first.verifier_key  # same key file, same identity
    services.Member.objects.filter(id=member.id).update(witness_url=again.url)
    rewrite_log(index=0)
    append(1, start=3)
    tasks.seal_pending()
    assert WitnessRefusal.objects.get().status == 422


def test_witness_answers_are_verified_before_they_are_stored(start_witness, settings):
    """A witness whose key differs from the registered one gets nothing stored."""
    log_key = services.ledger_verifier_key()
    real = start_witness("witness.example/w1", [log_key])
    other = start_witness("witness.example/w2", [log_key])
    services.member_register(name="Impostor", verifier_key=other.verifier_key, witness_url=real.url)
    append(1)
    tasks.seal_pending()
    assert not Cosignature.objects.exists()
    refusal = WitnessRefusal.objects.get()
    assert refusal.status == 502 and "bad cosignature" in refusal.detail


def test_cosigned_checkpoint_lines_are_c2sp_timestamped_signatures(consortium):
    witnesses, _ = consortium
    append(1)
    tasks.seal_pending()
    line = Cosignature.objects.first().line
    name, encoded = line.removeprefix("\u2014 ").rstrip("\n").split(" ")
    raw = base64.b64decode(encoded)
    assert len(raw) == 4 + 8 + 64
    signer = cosign.parse_verifier_key(next(w.verifier_key for w in witnesses if name in w.verifier_key))
    assert raw[:4] == signer.key_id == cosign.key_id(name, signer.public_key)


def test_sealing_asks_witnesses_only_when_some_are_registered(db, monkeypatch):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pushes = []
    monkeypatch.setattr(tasks.witness_push, "delay", lambda: pushes.append(1))
    with transaction.atomic():
        services.entry_append(kind="test.entry", payload={"n": 1})
    assert tasks.seal_pending() == 1 and pushes == []
    public = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    services.member_register(name="w1.example.org", verifier_key=cosign.verifier_key("w1.example.org", public),
                             witness_url="http://127.0.0.1:9/")
    with transaction.atomic():
        services.entry_append(kind="test.entry", payload={"n": 2})
    assert tasks.seal_pending() == 1 and pushes == [1]
