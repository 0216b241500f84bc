"""Receipts checked by `python -m ledger.verify` in a process with no Django and no database."""

import base64
import json
import os
import subprocess
import sys

import pytest

from ledger import merkle, selectors, services, tasks
from ledger.models import Cosignature, Entry
from tests.ledger import tamper
from tests.services.conftest import ROOT

pytestmark = pytest.mark.django_db


def run_verifier(receipt: dict | str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "receipt.json"
    path.write_text(receipt if isinstance(receipt, str) else json.dumps(receipt))
    # Nothing that could reach Django or a database: no settings module, no DATABASE_URL.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO", "DATABASE", "REDIS", "CELERY"))}
    # python -m ledger.verify, plus a check afterwards that Django was never imported.
    check = ("import sys, runpy\nsys.argv = ['ledger.verify', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('ledger.verify', run_name='__main__')\n"
             "finally:\n    assert 'django' not in sys.modules, 'imported django'\n")
    return subprocess.run([sys.executable, "-c", check, str(path), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def receipt(consortium):
    for i in range(6):
        services.entry_append(kind="consent.granted", payload={"n": f"p-{i}"})
    tasks.seal_pending()
    entry = Entry.objects.get(index=3)
    return selectors.entry_receipt(entry_id=entry.id)


def pins(witnesses=()) -> list[str]:
    """The real keys, pinned on the command line: a receipt's own keys prove nothing."""
    args = ["--log-key", services.ledger_verifier_key()]
    for w in witnesses:
        args += ["--witness-key", w.verifier_key]
    return args


def test_a_receipt_verifies_offline_with_its_quorum(receipt, tmp_path, consortium):
    witnesses, _ = consortium
    assert receipt["final"] is True and receipt["quorum"] == 2 and receipt["tree_size"] == 6
    assert base64.b64decode(receipt["leaf"]) == tamper.payload_of(3)
    result = run_verifier(receipt, tmp_path, *pins(witnesses), "--quorum", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("VALID: entry 3 is in localhost/consent-portal/ledger at tree size 6")
    assert "cosigned by 2 witness(es) (quorum 2)" in result.stdout
    # Consistent with the keys it carries is all it shows without pins.
    assert run_verifier(receipt, tmp_path).returncode == 3


def test_receipt_prefers_the_latest_final_checkpoint(receipt, consortium, settings, tmp_path):
    witnesses, _ = consortium
    witnesses[1].stop()
    services.entry_append(kind="consent.granted", payload={"n": "late"})
    tasks.seal_pending()  # size 7, cosigned by one witness only
    entry = Entry.objects.get(index=3)
    assert selectors.entry_receipt(entry_id=entry.id)["tree_size"] == 6
    # Built afresh, not remembered: the newest checkpoint with the quorum (6), not the newest (7).
    selectors._final_receipts.clear()
    rebuilt = selectors.entry_receipt(entry_id=entry.id)
    assert rebuilt["final"] is True and rebuilt["tree_size"] == 6 and rebuilt["checkpoint"].count("\n— ") == 3
    assert run_verifier(rebuilt, tmp_path, *pins(witnesses)).returncode == 0
    late = Entry.objects.get(index=6)
    unfinal = selectors.entry_receipt(entry_id=late.id)
    assert unfinal["final"] is False and unfinal["tree_size"] == 7
    assert unfinal["witness_keys"] == rebuilt["witness_keys"] and len(unfinal["witness_keys"]) == 2


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda r: r.update(leaf=base64.b64encode(b'{"kind":"x"}').decode()), "inclusion proof"),
        (lambda r: r.update(index=r["index"] + 1), "inclusion proof"),
        (lambda r: r["inclusion_proof"].reverse(), "inclusion proof"),
        (lambda r: r.update(checkpoint=r["checkpoint"].replace("\n6\n", "\n7\n", 1)), "checkpoint"),
        (lambda r: r.update(quorum=3), "quorum not met: 2 of the 2"),
        (lambda r: r.update(witness_keys=r["witness_keys"][:1]), "quorum not met: 1 of the 1"),
        # Dropping a cosignature line leaves one: short of the quorum of 2.
        (lambda r: r.update(checkpoint=r["checkpoint"].rsplit("\u2014", 1)[0]), "quorum not met"),
    ],
)
def test_a_tampered_receipt_fails_with_a_clear_message(receipt, tmp_path, tamper, message):
    tamper(receipt)
    result = run_verifier(receipt, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("INVALID: ") and message in result.stderr


def test_a_forged_cosignature_fails(receipt, tmp_path):
    lines = receipt["checkpoint"].split("\n")
    last = lines[-2]
    name, sig = last.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(sig))
    raw[-1] ^= 1
    lines[-2] = f"{name} {base64.b64encode(bytes(raw)).decode()}"
    receipt["checkpoint"] = "\n".join(lines)
    result = run_verifier(receipt, tmp_path)
    assert result.returncode == 1 and "does not verify" in result.stderr


def test_a_receipt_from_another_log_key_fails_when_keys_are_pinned(receipt, tmp_path):
    from ledger import note
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = note.verifier_key("localhost/consent-portal/ledger",
                              note.public_key_bytes(Ed25519PrivateKey.generate()))
    result = run_verifier(receipt, tmp_path, "--log-key", other)
    assert result.returncode == 1 and "no signature by a trusted key" in result.stderr


@pytest.mark.parametrize("text", ["not json", "[]", '{"format": "other"}',
                                  '{"format": "consent-ledger-receipt/v1", "index": "3"}'])
def test_an_unreadable_receipt_exits_2(tmp_path, text):
    result = run_verifier(text, tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("receipt unreadable: ")


def test_no_receipt_while_pending_and_unknown_ids_raise():
    entry = services.entry_append(kind="consent.granted", payload={"n": "p"})
    assert selectors.entry_receipt(entry_id=entry.id) is None
    with pytest.raises(Entry.DoesNotExist):
        selectors.entry_receipt(entry_id=entry.id + 1000)


def test_quorum_zero_receipt_without_witnesses_verifies(tmp_path, settings):
    settings.LEDGER_WITNESS_QUORUM = 0
    entry = services.entry_append(kind="consent.granted", payload={"n": "p"})
    services.ledger_seal_pending()
    receipt = selectors.entry_receipt(entry_id=entry.id)
    assert receipt["final"] and receipt["witness_keys"] == []
    assert merkle.leaf_hash(base64.b64decode(receipt["leaf"]))
    assert run_verifier(receipt, tmp_path, *pins()).returncode == 0
    assert not Cosignature.objects.exists()


def test_a_final_receipt_is_served_again_without_queries_and_a_pending_one_is_not_kept(
    receipt, consortium, django_assert_num_queries
):
    entry = Entry.objects.get(index=3)
    with django_assert_num_queries(1):  # only: who are the witnesses now?
        again = selectors.entry_receipt(entry_id=entry.id)
    assert again == receipt and again["final"] is True
    # Against the checkpoint it was first built on, even once the log has grown.
    witnesses, _ = consortium
    witnesses[1].stop()
    services.entry_append(kind="consent.granted", payload={"n": "late"})
    tasks.seal_pending()  # size 7, cosigned by one witness only: not final
    assert selectors.entry_receipt(entry_id=entry.id)["tree_size"] == 6
    late = Entry.objects.get(index=6)
    assert selectors.entry_receipt(entry_id=late.id)["final"] is False
    assert late.id not in selectors._final_receipts
    # The caller's copy is its own: changing it does not change what is served next.
    again["inclusion_proof"].clear()
    assert selectors.entry_receipt(entry_id=entry.id)["inclusion_proof"] == receipt["inclusion_proof"]


def test_a_remembered_receipt_is_rebuilt_when_a_witness_leaves(receipt, consortium):
    _, members = consortium
    entry = Entry.objects.get(index=3)
    assert selectors.entry_receipt(entry_id=entry.id)["final"] is True
    members[1].active = False  # e.g. its key was compromised
    members[1].save(update_fields=["active"])
    rebuilt = selectors.entry_receipt(entry_id=entry.id)
    assert rebuilt["witness_keys"] == [members[0].verifier_key]
    assert rebuilt["final"] is False  # one witness left, quorum 2
