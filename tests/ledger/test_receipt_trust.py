"""`python -m ledger.verify` vouches only for keys the verifier pinned; it reads whole saved
check answers; `manage.py ledger_trust` prints the trust file it pins from."""

import base64
import io
import json
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import Client

from consent_portal import services as consent_services
from consent_portal.models import BulkCheck
from ledger import merkle, note, selectors, services, tasks
from ledger.canonical import canonical_json
from ledger.models import Entry
from ledger.verify import ReceiptError, UntrustedReceiptError, verify_receipt
from tests.services.conftest import ROOT

pytestmark = pytest.mark.django_db


def run(document, tmp_path, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "saved.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    # As a custodian runs it: no Django settings, no database.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO", "DATABASE", "REDIS", "CELERY"))}
    return subprocess.run([sys.executable, "-m", "ledger.verify", *args, str(path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def trust_file(tmp_path, **fields) -> str:
    trust = {"origin": settings.LEDGER_ORIGIN, "log_keys": [services.ledger_verifier_key()],
             "witness_keys": [], "quorum": 0, **fields}
    path = tmp_path / "trust.json"
    path.write_text(json.dumps(trust))
    return str(path)


def made_up_receipt() -> dict:
    """What a tester can make without the log: one leaf, and a checkpoint signed by a key
    of their own under the log's name and origin."""
    private = Ed25519PrivateKey.generate()
    name = settings.LEDGER_KEY_NAME
    leaf = canonical_json({"kind": "consent.granted", "participant": "made-up"})
    body = note.checkpoint_body(settings.LEDGER_ORIGIN, 1, merkle.leaf_hash(leaf))
    return {
        "format": "consent-ledger-receipt/v1", "origin": settings.LEDGER_ORIGIN, "index": 0,
        "leaf": base64.b64encode(leaf).decode(), "tree_size": 1, "inclusion_proof": [],
        "checkpoint": note.sign_note(body, name, private),
        "log_key": note.verifier_key(name, note.public_key_bytes(private)),
        "witness_keys": [], "quorum": 0, "final": True,
    }


@pytest.fixture
def receipt():
    """A real receipt of a log with quorum 0 (the embedded default)."""
    for i in range(4):
        services.entry_append(kind="consent.granted", payload={"n": f"p-{i}"})
    services.ledger_seal_pending()
    return selectors.entry_receipt(entry_id=Entry.objects.get(index=2).id)


# -- what is pinned --


def test_a_made_up_log_key_is_untrusted_without_a_pin(tmp_path):
    forged = made_up_receipt()
    label = "+".join(forged["log_key"].split("+", 2)[:2])  # name+key id
    result = run(forged, tmp_path)
    assert result.returncode == 3 and result.stdout == ""
    assert result.stderr == (
        f"UNTRUSTED: the receipt is consistent with the log key it carries ({label}), but no "
        "log key was pinned: pass --log-key, or --trust FILE (the biobank operator's trust "
        "file: manage.py ledger_trust)\n")


def test_a_made_up_log_key_is_invalid_against_the_real_key(tmp_path, receipt):
    forged = made_up_receipt()
    label = "+".join(forged["log_key"].split("+", 2)[:2])
    result = run(forged, tmp_path, "--log-key", services.ledger_verifier_key())
    assert result.returncode == 1
    assert result.stderr == ("INVALID: checkpoint: note has no signature by a trusted key "
                             f"(the receipt names {label})\n")


def test_a_real_receipt_is_valid_against_the_real_key_and_untrusted_without(tmp_path, receipt):
    result = run(receipt, tmp_path, "--log-key", services.ledger_verifier_key())
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("VALID: entry 2 is in localhost/consent-portal/ledger at tree size 4; "
                             "checkpoint cosigned by 0 witness(es) (quorum 0, the receipt's own)\n")
    # The real receipt is no different from a made-up one until a key is pinned.
    assert run(receipt, tmp_path).returncode == 3


def test_a_broken_receipt_is_invalid_even_without_a_pin(tmp_path):
    forged = made_up_receipt()
    forged["leaf"] = base64.b64encode(b'{"kind":"other"}').decode()
    result = run(forged, tmp_path)
    assert result.returncode == 1 and result.stderr.startswith("INVALID: inclusion proof")


def test_verify_receipt_raises_untrusted_unless_keys_are_given(receipt):
    with pytest.raises(UntrustedReceiptError, match="no log key was pinned"):
        verify_receipt(receipt)
    # A caller that only catches ReceiptError still fails closed.
    assert issubclass(UntrustedReceiptError, ReceiptError)
    assert verify_receipt(receipt, log_keys=[services.ledger_verifier_key()]).startswith("entry 2 ")
    with pytest.raises(ReceiptError, match="no signature by a trusted key"):
        verify_receipt(made_up_receipt(), log_keys=[services.ledger_verifier_key()])


def test_a_trust_file_pins_the_log(tmp_path, receipt):
    trust = trust_file(tmp_path)
    result = run(receipt, tmp_path, "--trust", trust)
    assert result.returncode == 0, result.stderr
    assert "(quorum 0)" in result.stdout  # the trust file's quorum, not the receipt's
    assert run(made_up_receipt(), tmp_path, "--trust", trust).returncode == 1


def test_a_trust_file_for_another_origin_refuses_the_receipt(tmp_path, receipt):
    result = run(receipt, tmp_path, "--trust", trust_file(tmp_path, origin="other.example/ledger"))
    assert result.returncode == 1
    assert result.stderr == ("INVALID: checkpoint origin 'localhost/consent-portal/ledger' is not "
                             "the pinned origin 'other.example/ledger'\n")


@pytest.mark.parametrize("fields, message", [
    ({"quorum": None}, "quorum is required"),
    ({"log_keys": []}, "log_keys must list at least one"),
    ({"log_keys": ["not-a-key"]}, "log key: verifier key 'not-a-key' is not name+hex8+base64"),
    ({"origin": ""}, "origin must be"),
    ({"quorum": 1}, "quorum 1 needs at least as many witness keys; 0 given"),
    ({"witnesses": []}, "unknown field(s) witnesses"),
])
def test_a_bad_trust_file_is_refused(tmp_path, receipt, fields, message):
    result = run(receipt, tmp_path, "--trust", trust_file(tmp_path, **fields))
    assert result.returncode == 2 and result.stderr.startswith("cannot pin: trust file ")
    assert message in result.stderr


def test_a_pinned_quorum_is_not_lowered_by_the_receipt(tmp_path, receipt):
    assert receipt["quorum"] == 0
    result = run(receipt, tmp_path, "--trust", trust_file(tmp_path), "--quorum", "1")
    assert result.returncode == 1 and "quorum not met: 0 of the 0" in result.stderr


def test_a_quorum_without_pinned_witness_keys_is_untrusted(tmp_path, consortium):
    witnesses, _ = consortium
    for i in range(3):
        services.entry_append(kind="consent.granted", payload={"n": f"p-{i}"})
    tasks.seal_pending()  # seals and has the witnesses cosign
    receipt = selectors.entry_receipt(entry_id=Entry.objects.get(index=1).id)
    assert receipt["final"] and receipt["quorum"] == 2
    result = run(receipt, tmp_path, "--log-key", services.ledger_verifier_key())
    assert result.returncode == 3
    assert result.stderr.startswith(
        "UNTRUSTED: the receipt is consistent with the 2 witness key(s) it carries "
        "(witness.example/w1+")
    assert "but no witness keys were pinned: pass --witness-key, or --trust FILE" in result.stderr
    # Neither pinned: both named.
    result = run(receipt, tmp_path)
    assert result.returncode == 3
    assert "but no log key and no witness keys were pinned" in result.stderr
    # Pinned in a trust file: valid.
    keys = [w.verifier_key for w in witnesses]
    result = run(receipt, tmp_path, "--trust", trust_file(tmp_path, witness_keys=keys, quorum=2))
    assert result.returncode == 0, result.stderr
    assert "cosigned by 2 witness(es) (quorum 2): witness.example/w1, witness.example/w2" \
        in result.stdout
    # A broken cosignature is INVALID, pinned or not.
    lines = receipt["checkpoint"].split("\n")
    name, sig = lines[-2].rsplit(" ", 1)
    raw = bytearray(base64.b64decode(sig))
    raw[-1] ^= 1
    lines[-2] = f"{name} {base64.b64encode(bytes(raw)).decode()}"
    receipt["checkpoint"] = "\n".join(lines)
    assert run(receipt, tmp_path, "--log-key", services.ledger_verifier_key()).returncode == 1


# -- whole saved answers --


@pytest.fixture
def api(custodian_and_token):
    return Client(HTTP_AUTHORIZATION=f"Bearer {custodian_and_token[1]}")


@pytest.fixture
def granted(participant, custodian_and_token, purposes, approved_study,
            django_capture_on_commit_callbacks):
    consent_services.sample_register(custodian=custodian_and_token[0], identifier="S-1",
                                     participant=participant, kind="blood")
    with django_capture_on_commit_callbacks(execute=True):  # the grant is sealed
        consent_services.consent_grant(participant=participant,
                                       purpose=purposes["general-research"])


QUESTION = {"sample": "S-1", "study": "hmb-study", "purpose": "DUO:0000006"}


def ask(api, path="/api/v1/consent-checks", **body):
    return api.post(path, data=json.dumps(body or QUESTION), content_type="application/json")


def test_a_whole_check_answer_is_verified_part_by_part(tmp_path, api, granted,
                                                       django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        check_id = ask(api).json()["check"]
    # Fetched again once sealed, as a custodian saves it.
    answer = api.get(f"/api/v1/consent-checks/{check_id}").json()
    assert answer["decision"] == "permit"
    assert answer["ledger"]["format"] == "consent-ledger-receipt/v1"
    result = run(answer, tmp_path, "--trust", trust_file(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("VALID: check: entry ")
    assert lines[1].startswith("VALID: consent event: entry ")
    # Unpinned, each part says so on its own line.
    result = run(answer, tmp_path)
    assert result.returncode == 3 and result.stdout == ""
    assert [line.split(": ", 2)[:2] for line in result.stderr.splitlines()] == [
        ["UNTRUSTED", "check"], ["UNTRUSTED", "consent event"]]
    # A genuine receipt of another entry does not prove this answer.
    answer["ledger"] = answer["evidence"]["consent"]["latest_event"]["ledger"]
    result = run(answer, tmp_path, "--trust", trust_file(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("INVALID: check: the receipt is of another entry: its leaf "
                                    f"has check None, this answer '{check_id}'")
    assert result.stdout.startswith("VALID: consent event: ")


def test_an_answer_saved_before_sealing_is_refused_with_what_to_do(
        tmp_path, api, participant, custodian_and_token, purposes, approved_study):
    consent_services.sample_register(custodian=custodian_and_token[0], identifier="S-1",
                                     participant=participant, kind="blood")
    consent_services.consent_grant(participant=participant, purpose=purposes["general-research"])
    answer = ask(api).json()  # nothing committed in a test transaction: nothing sealed
    assert answer["ledger"]["sealed"] is False
    result = run(answer, tmp_path, "--trust", trust_file(tmp_path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "NOT SEALED: check: the check was recorded but not sealed yet when this answer was saved: "
        f"fetch GET /api/v1/consent-checks/{answer['check']} again later and save that answer",
        "NOT SEALED: consent event: the consent's latest event was not sealed yet when the check "
        "was answered, and a saved check keeps the evidence it was given: ask again later "
        "(POST /api/v1/consent-checks) and save the new answer",
    ]
    # Fetched again after sealing: the check verifies, the evidence it was given still does not.
    services.ledger_seal_pending()
    again = api.get(f"/api/v1/consent-checks/{answer['check']}").json()
    result = run(again, tmp_path, "--trust", trust_file(tmp_path))
    assert result.returncode == 2 and result.stdout.startswith("VALID: check: entry ")
    assert result.stderr.startswith("NOT SEALED: consent event: ")
    # Only the ledger object, saved too early.
    result = run(answer["ledger"], tmp_path, "--trust", trust_file(tmp_path))
    assert result.returncode == 2 and result.stderr.startswith(
        "NOT SEALED: this ledger entry was not sealed yet when it was saved: fetch "
        "GET /api/v1/consent-checks/<id> again later")


@pytest.mark.parametrize("text", ['{"decision": "permit"}', '{"hello": 1}', "[1, 2]"])
def test_other_json_is_refused_naming_what_to_save(tmp_path, text):
    result = run(text, tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "receipt unreadable: this is neither a consent-ledger-receipt/v1 receipt nor a "
        "consent-check answer: save the `ledger` object of a consent-check answer, or the whole "
        "answer of POST /api/v1/consent-checks or GET /api/v1/consent-checks/<id>\n")


def test_a_bulk_answer_is_verified_against_its_results(tmp_path, api, granted):
    answer = json.loads(ask(api, "/api/v1/consent-checks/bulk", study="hmb-study",
                            purpose="DUO:0000006", samples=["S-1", "S-2"]).content)
    result = run(answer, tmp_path, "--trust", trust_file(tmp_path))
    assert result.returncode == 2 and result.stderr.startswith(
        "NOT SEALED: bulk check: this bulk answer was saved before its ledger entry was sealed, "
        "and the portal serves no bulk check again: ask the biobank operator for the receipt "
        f"of bulk check {answer['check']}")
    # As the embedded default answers (sealed in-process before the answer is built).
    services.ledger_seal_pending()
    entry_id = BulkCheck.objects.get().ledger_entry_id
    answer["ledger"] = selectors.receipt_with_openings(
        selectors.entry_receipt(entry_id=entry_id),
        selectors.entry_openings(entry_ids=[entry_id], fields=["check", "custodian", "study"])[entry_id])
    result = run(answer, tmp_path, "--trust", trust_file(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("VALID: bulk check: entry ")
    answer["results"][1]["decision"] = "permit"  # what was not said
    result = run(answer, tmp_path, "--trust", trust_file(tmp_path))
    assert result.returncode == 1 and result.stderr.startswith(
        "INVALID: bulk check: the receipt is of another entry: its leaf has results_sha256")


# -- the trust file the operator hands out --


def trust_printed() -> dict:
    out = io.StringIO()
    call_command("ledger_trust", stdout=out)
    return json.loads(out.getvalue())


def test_ledger_trust_prints_what_the_verifier_pins(tmp_path, receipt):
    trust = trust_printed()
    assert trust == {"origin": "localhost/consent-portal/ledger",
                     "log_keys": [services.ledger_verifier_key()], "witness_keys": [], "quorum": 0}
    assert trust["log_keys"] == [selectors.ledger_info()["verifier_key"]]
    path = tmp_path / "portal-trust.json"
    path.write_text(json.dumps(trust))
    assert run(receipt, tmp_path, "--trust", str(path)).returncode == 0
    assert run(made_up_receipt(), tmp_path, "--trust", str(path)).returncode == 1


def test_ledger_trust_names_the_witnesses_and_quorum(tmp_path, consortium):
    witnesses, _ = consortium
    trust = trust_printed()
    assert trust["witness_keys"] == [w.verifier_key for w in witnesses] and trust["quorum"] == 2
    services.entry_append(kind="consent.granted", payload={"n": "p"})
    tasks.seal_pending()
    receipt = selectors.entry_receipt(entry_id=Entry.objects.get(index=0).id)
    path = tmp_path / "portal-trust.json"
    path.write_text(json.dumps(trust))
    result = run(receipt, tmp_path, "--trust", str(path))
    assert result.returncode == 0 and "cosigned by 2 witness(es) (quorum 2)" in result.stdout


def test_ledger_trust_refuses_a_quorum_no_witnesses_can_meet(settings):
    settings.LEDGER_WITNESS_QUORUM = 1
    with pytest.raises(CommandError, match="quorum 1 needs at least as many witness keys; 0 given"):
        trust_printed()
