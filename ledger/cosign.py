"""C2SP tlog-cosignature (Ed25519, cosignature/v1) and the tlog-witness request body.

Pure Python, no Django: the witness and the offline receipt verifier import it alone.

    key-id    = SHA-256(name || "\\n" || 0x04 || public-key)[:4]
    verifier  = name "+" hex(key-id) "+" base64(0x04 || public-key)
    signature = "— " name " " base64(key-id || u64be(timestamp) || ed25519-signature) "\\n"
    message   = "cosignature/v1\\n" "time " decimal(timestamp) "\\n" checkpoint-body
"""

import base64
import hashlib
import re
import struct
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger import note
from ledger.merkle import HASH_SIZE

ALG_COSIGNATURE_V1 = 0x04
MAX_PROOF_LINES = 63  # tlog-witness: a client MUST NOT send more
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")


class Cosigner(NamedTuple):
    name: str
    key_id: bytes
    public_key: bytes


class Cosignature(NamedTuple):
    name: str
    key_id: bytes
    timestamp: int
    line: str  # the signature line, newline included, as it goes on the note


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(
        name.encode() + b"\n" + bytes([ALG_COSIGNATURE_V1]) + public_key
    ).digest()[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    note.check_key_name(name)
    if len(public_key) != 32:
        raise note.NoteError("an Ed25519 public key is 32 bytes")
    encoded = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + public_key).decode()
    return f"{name}+{key_id(name, public_key).hex()}+{encoded}"


def parse_verifier_key(vkey: str) -> Cosigner:
    if not isinstance(vkey, str):
        raise note.NoteError("a cosigner verifier key must be text")
    parts = vkey.split("+", 2)
    if len(parts) != 3 or not _KEY_ID_HEX.fullmatch(parts[1]):
        raise note.NoteError(f"verifier key {vkey[:60]!r} is not name+hex8+base64")
    name, hex_id, encoded = parts
    note.check_key_name(name)
    key = note._b64decode(encoded)
    if len(key) != 33 or key[0] != ALG_COSIGNATURE_V1:
        raise note.NoteError(
            f"verifier key {name!r} is not an Ed25519 cosignature/v1 key (type 0x04)"
        )
    if key_id(name, key[1:]) != bytes.fromhex(hex_id):
        raise note.NoteError(f"verifier key {name!r} has a key id that does not match its key")
    return Cosigner(name, bytes.fromhex(hex_id), key[1:])


def signed_message(body: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()


def cosign(body: str, name: str, private_key: Ed25519PrivateKey, timestamp: int) -> str:
    """The cosignature line for a checkpoint body (signature lines excluded)."""
    note.parse_checkpoint(body)
    note.check_key_name(name)
    if not 0 <= timestamp < 2**63:
        raise note.NoteError("cosignature timestamp must be between 0 and 2**63 - 1")
    public = note.public_key_bytes(private_key)
    signature = private_key.sign(signed_message(body, timestamp))
    raw = key_id(name, public) + struct.pack(">Q", timestamp) + signature
    return f"{note.SIGNATURE_PREFIX}{name} {base64.b64encode(raw).decode()}\n"


def verify_cosignatures(note_text: str, cosigner_keys: list[str]) -> list[Cosignature]:
    """The cosignatures on a note by the given cosigners, each verified.

    Lines by other keys (the log's own signature among them) are skipped, as signed-note
    says; a line that claims a known key but does not verify raises BadSignatureError.
    """
    known = {}
    for vkey in cosigner_keys:
        cosigner = parse_verifier_key(vkey)
        known[(cosigner.name, cosigner.key_id)] = cosigner
    body, signatures = note.split_note(note_text)
    found: dict[tuple[str, bytes], Cosignature] = {}
    for name, kid, raw in signatures:
        cosigner = known.get((name, kid))
        if cosigner is None:
            continue
        if len(raw) != 8 + 64:
            raise note.MalformedNoteError(f"cosignature by {name!r} is not timestamp+signature")
        (timestamp,) = struct.unpack(">Q", raw[:8])
        if timestamp >= 2**63:
            raise note.MalformedNoteError(f"cosignature by {name!r} has a timestamp over 2**63-1")
        try:
            Ed25519PublicKey.from_public_bytes(cosigner.public_key).verify(
                raw[8:], signed_message(body, timestamp)
            )
        except InvalidSignature:
            raise note.BadSignatureError(f"cosignature by {name!r} does not verify") from None
        if (name, kid) in found:
            raise note.MalformedNoteError(f"note carries two cosignatures by {name!r}")
        line = f"{note.SIGNATURE_PREFIX}{name} {base64.b64encode(kid + raw).decode()}\n"
        found[(name, kid)] = Cosignature(name, kid, timestamp, line)
    return list(found.values())


# -- tlog-witness add-checkpoint request body --


def add_checkpoint_body(old_size: int, proof: list[bytes], checkpoint_note: str) -> bytes:
    lines = [f"old {old_size}"] + [base64.b64encode(h).decode() for h in proof]
    return ("\n".join(lines) + "\n\n" + checkpoint_note).encode()


def parse_add_checkpoint(data: bytes) -> tuple[int, list[bytes], str]:
    """(old size, consistency proof, checkpoint note) from a request body; NoteError if bad."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise note.MalformedNoteError("request body is not UTF-8") from None
    head, sep, checkpoint_note = text.partition("\n\n")
    if not sep:
        raise note.MalformedNoteError("request body has no empty line before the checkpoint")
    lines = head.split("\n")
    if not lines[0].startswith("old ") or not _DECIMAL.fullmatch(lines[0][4:]):
        raise note.MalformedNoteError("request body must start with 'old <decimal size>'")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise note.MalformedNoteError(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in lines[1:]:
        digest = note._b64decode(line)
        if len(digest) != HASH_SIZE:
            raise note.MalformedNoteError("a consistency proof line is not a 32-byte hash")
        proof.append(digest)
    return int(lines[0][4:]), proof, checkpoint_note
