"""C2SP signed notes and checkpoints: a known-answer vector, formats and tampering."""

import base64
import hashlib
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger import note

# The example in the documentation of Go's golang.org/x/mod/sumdb/note, the reference
# implementation of C2SP signed-note.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_BODY = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_BODY + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgY"
    "N1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ORIGIN = "example.org/test-log"
ROOT = hashlib.sha256(b"root").digest()


@pytest.fixture
def signer():
    key = Ed25519PrivateKey.generate()
    return key, note.verifier_key("test-log", note.public_key_bytes(key))


def go_private_key() -> Ed25519PrivateKey:
    raw = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert raw[0] == note.ALG_ED25519
    return Ed25519PrivateKey.from_private_bytes(raw[1:])


def test_matches_go_reference_vector():
    key = go_private_key()
    assert note.verifier_key("PeterNeumann", note.public_key_bytes(key)) == GO_VKEY
    assert note.sign_note(GO_BODY, "PeterNeumann", key) == GO_NOTE
    assert note.open_note(GO_NOTE, [GO_VKEY]) == GO_BODY


def test_verifier_key_format_and_key_id():
    key = Ed25519PrivateKey.generate()
    public = note.public_key_bytes(key)
    vkey = note.verifier_key("log.example/a", public)
    name, hex_id, encoded = vkey.split("+", 2)
    assert name == "log.example/a"
    assert re.fullmatch(r"[0-9a-f]{8}", hex_id)
    assert bytes.fromhex(hex_id) == hashlib.sha256(b"log.example/a\n\x01" + public).digest()[:4]
    assert base64.b64decode(encoded) == b"\x01" + public
    assert note.parse_verifier_key(vkey) == (name, bytes.fromhex(hex_id), public)


def test_verifier_key_whose_base64_contains_plus():
    # Go's parser splits only at the first two '+': the key's base64 may hold more.
    seed = 0
    while True:
        key = Ed25519PrivateKey.from_private_bytes(seed.to_bytes(32, "big"))
        vkey = note.verifier_key("log", note.public_key_bytes(key))
        if "+" in vkey.split("+", 2)[2]:
            break
        seed += 1
    body = note.checkpoint_body(ORIGIN, 1, ROOT)
    assert note.open_note(note.sign_note(body, "log", key), [vkey]) == body


def test_signature_line_is_em_dash_name_and_keyid_plus_signature(signer):
    key, vkey = signer
    body = note.checkpoint_body(ORIGIN, 7, ROOT)
    signed = note.sign_note(body, "test-log", key)
    assert signed.startswith(body + "\n")
    line = signed[len(body) + 1 :]
    assert line.startswith("\u2014 test-log ") and line.endswith("\n") and line.count("\n") == 1
    raw = base64.b64decode(line.split(" ")[2])
    assert raw[:4] == note.parse_verifier_key(vkey).key_id
    Ed25519PublicKey.from_public_bytes(note.public_key_bytes(key)).verify(raw[4:], body.encode())


def test_checkpoint_round_trip(signer):
    key, vkey = signer
    body = note.checkpoint_body(ORIGIN, 12345, ROOT)
    assert body == f"{ORIGIN}\n12345\n{base64.b64encode(ROOT).decode()}\n"
    signed = note.sign_note(body, "test-log", key)
    assert note.open_checkpoint(signed, [vkey]) == (ORIGIN, 12345, ROOT)


def test_tampered_body_or_signature_is_refused(signer):
    key, vkey = signer
    signed = note.sign_note(note.checkpoint_body(ORIGIN, 10, ROOT), "test-log", key)
    with pytest.raises(note.BadSignatureError):
        note.open_note(signed.replace("\n10\n", "\n11\n"), [vkey])
    body, sig_line = signed.split("\n\n")
    raw = bytearray(base64.b64decode(sig_line.split(" ")[2]))
    raw[10] ^= 1
    forged = f"{body}\n\n\u2014 test-log {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(note.BadSignatureError):
        note.open_note(forged, [vkey])


def test_unknown_signers_are_skipped_but_one_known_is_required(signer):
    key, vkey = signer
    other = Ed25519PrivateKey.generate()
    other_vkey = note.verifier_key("witness", note.public_key_bytes(other))
    body = note.checkpoint_body(ORIGIN, 3, ROOT)
    signed = note.sign_note(body, "test-log", key)
    cosigned = signed + note.sign_note(body, "witness", other).split("\n\n")[1]
    assert note.open_note(cosigned, [vkey]) == body
    assert note.open_note(cosigned, [vkey, other_vkey]) == body
    with pytest.raises(note.UnverifiedNoteError):
        note.open_note(signed, [other_vkey])
    with pytest.raises(note.MalformedNoteError):
        note.open_note(signed + signed.split("\n\n")[1], [vkey])  # the same key twice


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s.replace("\n\n", "\n"),  # no signature block
        lambda s: s[:-1],  # no final newline
        lambda s: s.replace("\u2014", "-"),  # hyphen instead of em dash
        lambda s: s.replace("\u2014 test-log ", "\u2014 test-log  "),  # two spaces
        lambda s: s[:-3] + "!!\n",  # not base64
        lambda s: s.replace(ORIGIN, ORIGIN + "\t"),  # control character
        lambda s: s + "\n",  # an empty signature line
        lambda s: s.split("\n\n")[0] + "\n\n\u2014 test-log AAAA\n",  # signature too short
    ],
)
def test_malformed_notes_are_refused(signer, mangle):
    key, vkey = signer
    signed = note.sign_note(note.checkpoint_body(ORIGIN, 3, ROOT), "test-log", key)
    with pytest.raises(note.MalformedNoteError):
        note.open_note(mangle(signed), [vkey])


@pytest.mark.parametrize("name", ["", "a+b", "a b", "tab\tname", "nbsp\u00a0name"])
def test_key_names_with_plus_or_whitespace_are_refused(name):
    key = Ed25519PrivateKey.generate()
    with pytest.raises(note.NoteError):
        note.verifier_key(name, note.public_key_bytes(key))
    with pytest.raises(note.NoteError):
        note.sign_note("body\n", name, key)


def test_verifier_keys_that_do_not_add_up_are_refused():
    wrong_id = GO_VKEY.replace("c74f20a3", "c74f20a4")
    for bad in [
        wrong_id,
        "PeterNeumann+c74f20a3",
        GO_VKEY.replace("+AR", "+AC"),
        "x+zzzzzzzz+AA==",
    ]:
        with pytest.raises(note.NoteError):
            note.parse_verifier_key(bad)


@pytest.mark.parametrize(
    "body",
    [
        "origin\n5\n",  # no root line
        f"\n5\n{base64.b64encode(ROOT).decode()}\n",  # empty origin
        f"origin\n05\n{base64.b64encode(ROOT).decode()}\n",  # leading zero
        f"origin\n-5\n{base64.b64encode(ROOT).decode()}\n",
        f"origin\n5\n{base64.b64encode(ROOT[:31]).decode()}\n",  # short root
        "origin\n5\nnot base64\n",
    ],
)
def test_malformed_checkpoints_are_refused(body):
    with pytest.raises(note.MalformedNoteError):
        note.parse_checkpoint(body)


def test_checkpoint_extension_lines_are_allowed():
    body = note.checkpoint_body(ORIGIN, 5, ROOT) + "extension line\n"
    assert note.parse_checkpoint(body) == (ORIGIN, 5, ROOT)
