"""C2SP signed notes (signed-note) carrying checkpoints (tlog-checkpoint), Ed25519 only.

Pure Python, no Django: the offline receipt verifier imports this module alone.

    note      = body "\\n" signature-line+
    body      = one or more lines, each ending in "\\n"
    signature = "— " key-name " " base64(key-id(4) || ed25519-signature(64)) "\\n"
    key-id    = SHA-256(key-name || "\\n" || 0x01 || public-key)[:4]
    verifier  = key-name "+" hex(key-id) "+" base64(0x01 || public-key)
    checkpoint body = origin "\\n" decimal-size "\\n" base64(root) "\\n" extension-line*
"""

import base64
import binascii
import hashlib
import re
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519 = 0x01
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
MAX_NOTE_SIZE = 1_000_000
MAX_SIGNATURES = 100
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")


class NoteError(ValueError):
    """A note, checkpoint or verifier key is malformed or its signature does not verify."""


class MalformedNoteError(NoteError):
    pass


class BadSignatureError(NoteError):
    pass


class UnverifiedNoteError(NoteError):
    """No signature on the note is from a key the caller trusts."""


class Verifier(NamedTuple):
    name: str
    key_id: bytes
    public_key: bytes


class Checkpoint(NamedTuple):
    origin: str
    size: int
    root: bytes


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise MalformedNoteError(f"{text[:40]!r} is not standard base64") from None


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def check_key_name(name: str) -> None:
    if not name or any(c == "+" or c.isspace() or not c.isprintable() for c in name):
        raise NoteError(f"key name {name!r} must be non-empty, without '+' or whitespace")


def _check_text(text: str, what: str) -> None:
    if not isinstance(text, str):
        raise MalformedNoteError(f"{what} must be text")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_NOTE_SIZE:
        raise MalformedNoteError(f"{what} is larger than {MAX_NOTE_SIZE} bytes")
    if not text.endswith("\n"):
        raise MalformedNoteError(f"{what} must end with a newline")
    for c in text:
        if (c < " " and c != "\n") or c == "\x7f" or "\ud800" <= c <= "\udfff":
            raise MalformedNoteError(f"{what} contains control character {c!r}")


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def public_key_bytes(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def verifier_key(name: str, public_key_bytes: bytes) -> str:
    check_key_name(name)
    if len(public_key_bytes) != 32:
        raise NoteError("an Ed25519 public key is 32 bytes")
    encoded = _b64encode(bytes([ALG_ED25519]) + public_key_bytes)
    return f"{name}+{key_id(name, public_key_bytes).hex()}+{encoded}"


def parse_verifier_key(vkey: str) -> Verifier:
    # The name has no '+', the key id is hex; base64 may contain '+'.
    parts = vkey.split("+", 2)
    if len(parts) != 3 or not _KEY_ID_HEX.fullmatch(parts[1]):
        raise NoteError(f"verifier key {vkey!r} is not name+hex8+base64")
    name, hex_id, encoded = parts
    check_key_name(name)
    key = _b64decode(encoded)
    if len(key) != 33 or key[0] != ALG_ED25519:
        raise NoteError(f"verifier key {name!r} is not an Ed25519 key")
    if key_id(name, key[1:]) != bytes.fromhex(hex_id):
        raise NoteError(f"verifier key {name!r} has a key id that does not match its key")
    return Verifier(name, bytes.fromhex(hex_id), key[1:])


def sign_note(body: str, name: str, private_key: Ed25519PrivateKey) -> str:
    _check_text(body, "note body")
    check_key_name(name)
    signature = private_key.sign(body.encode())
    kid = key_id(name, public_key_bytes(private_key))
    return f"{body}\n{SIGNATURE_PREFIX}{name} {_b64encode(kid + signature)}\n"


def split_note(note_text: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """Splits a note into its body and its (name, key id, signature) lines, unverified."""
    _check_text(note_text, "note")
    # Signature lines are never empty, so the last blank line ends the body.
    cut = note_text.rfind("\n\n")
    if cut < 0:
        raise MalformedNoteError("note has no signature block")
    body, block = note_text[: cut + 1], note_text[cut + 2 :]
    lines = block.split("\n")[:-1]
    if not lines or len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError(f"note must carry 1 to {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise MalformedNoteError(f"signature line {line[:40]!r} does not start with '— '")
        fields = line[len(SIGNATURE_PREFIX) :].split(" ")
        if len(fields) != 2:
            raise MalformedNoteError(f"signature line {line[:40]!r} is not '— name signature'")
        name, encoded = fields
        check_key_name(name)
        raw = _b64decode(encoded)
        if len(raw) < 5:
            raise MalformedNoteError(f"signature by {name!r} is too short")
        signatures.append((name, raw[:4], raw[4:]))
    return body, signatures


def open_note(note_text: str, verifier_keys: list[str]) -> str:
    """Returns the body once every signature by a trusted key verifies (at least one must).

    Signatures by keys the caller does not know are skipped, as C2SP signed-note says.
    """
    known = {}
    for vkey in verifier_keys:
        verifier = parse_verifier_key(vkey)
        known[(verifier.name, verifier.key_id)] = verifier
    body, signatures = split_note(note_text)
    verified = set()
    for name, kid, signature in signatures:
        verifier = known.get((name, kid))
        if verifier is None:
            continue
        if (name, kid) in verified:
            raise MalformedNoteError(f"note carries two signatures by {name!r}")
        try:
            Ed25519PublicKey.from_public_bytes(verifier.public_key).verify(signature, body.encode())
        except InvalidSignature:
            raise BadSignatureError(f"signature by {name!r} does not verify") from None
        verified.add((name, kid))
    if not verified:
        raise UnverifiedNoteError("note has no signature by a trusted key")
    return body


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    if not origin or "\n" in origin:
        raise NoteError("checkpoint origin must be one non-empty line")
    if size < 0 or len(root) != 32:
        raise NoteError("checkpoint needs a size >= 0 and a 32-byte root hash")
    return f"{origin}\n{size}\n{_b64encode(root)}\n"


def parse_checkpoint(body: str) -> Checkpoint:
    _check_text(body, "checkpoint")
    lines = body.split("\n")[:-1]
    if len(lines) < 3:
        raise MalformedNoteError("checkpoint must have origin, size and root hash lines")
    origin, size, root, *extensions = lines
    if not origin:
        raise MalformedNoteError("checkpoint origin is empty")
    if not _DECIMAL.fullmatch(size):
        raise MalformedNoteError(f"checkpoint size {size[:40]!r} is not a decimal number")
    root_bytes = _b64decode(root)
    if len(root_bytes) != 32:
        raise MalformedNoteError("checkpoint root hash is not 32 bytes")
    if any(not line for line in extensions):
        raise MalformedNoteError("checkpoint has an empty extension line")
    return Checkpoint(origin, int(size), root_bytes)


def open_checkpoint(note_text: str, verifier_keys: list[str]) -> Checkpoint:
    return parse_checkpoint(open_note(note_text, verifier_keys))
