"""Check ledger receipts offline: python -m ledger.verify --trust TRUST.json FILE.json

No database, no Django, no network. FILE holds the leaf bytes, the inclusion proof and
the cosigned checkpoint; it is one of:

- a receipt (consent-ledger-receipt/v1): the `ledger` object of a consent-check answer;
- a whole saved consent-check answer (the body of POST /api/v1/consent-checks or
  GET /api/v1/consent-checks/<id>): its receipts are checked one by one, each on its own
  line: "check" (the check itself) and "consent event" (the consent's latest event,
  evidence.consent.latest_event.ledger), and each must be the receipt of what the answer
  says (its check id and decision; its sample, study and credential where the entry
  commits to them);
- a saved bulk answer (POST /api/v1/consent-checks/bulk): "bulk check", whose leaf must
  carry the SHA-256 of the answer's results.

Blinded entries (ledger.blinding) carry salted commitments, not the values that say who;
a receipt the portal hands to someone entitled carries `openings` for those values, and
each must open its commitment: the summary line names what the entry was shown to commit
to.

A receipt carries the log's key and the witnesses' keys, but anyone can make up keys, so
they only show the receipt is consistent. VALID needs the keys you trust pinned: the log
key and, when the quorum is above 0, the witness keys, given with --log-key /
--witness-key / --quorum or in a trust file (--trust FILE). Get the trust file from the
biobank's operator out of band (`python manage.py ledger_trust` prints it); taking the
key from the server you are checking (GET /api/v1/ledger/) is trust on first use.

Trust file: one JSON object, exactly these fields:

    {"origin": "biobank.example/consent-portal/ledger",
     "log_keys": ["biobank.example/consent-portal/ledger+1a2b3c4d+AfV...="],
     "witness_keys": ["witness.example/w1+5e6f7a8b+BNq...="],
     "quorum": 1}

  origin        required; the checkpoint's origin line must be exactly this
  log_keys      required, at least one C2SP signed-note verifier key (Ed25519); the
                checkpoint must carry a valid signature by one of them
  witness_keys  C2SP cosignature/v1 verifier keys (default: none)
  quorum        required; how many of witness_keys must have cosigned the checkpoint
                (at most as many as there are witness keys)

--log-key and --witness-key add to the trust file's keys; --quorum replaces its quorum.
Without a pinned quorum the receipt's own is used.

Exit codes (for an answer with several receipts, the first that applies of 1, 2, 3):
  0  VALID: every receipt holds against the pinned keys
  1  INVALID: a receipt does not prove what it claims (checked against the pinned keys,
     or against the keys it carries when none are pinned)
  2  nothing to check: the file, the trust file or a pinned key cannot be read, the file
     is neither a receipt nor a check answer, or a part was not sealed yet when saved
  3  UNTRUSTED: consistent, but with keys it carries that were not pinned
"""

import argparse
import base64
import binascii
import hashlib
import json
import sys
from typing import NamedTuple

from ledger import blinding, cosign, merkle, note

RECEIPT_FORMAT = "consent-ledger-receipt/v1"
VALID, INVALID, UNREADABLE, UNTRUSTED = 0, 1, 2, 3
_TRUST_FIELDS = {"origin", "log_keys", "witness_keys", "quorum"}
_TRUST_HOWTO = "--trust FILE (the biobank operator's trust file: manage.py ledger_trust)"


class ReceiptError(Exception):
    """The receipt does not prove what it claims."""


class UntrustedReceiptError(ReceiptError):
    """The receipt holds only against keys it carries itself, not against pinned ones.

    A ReceiptError, so a caller that treats any ReceiptError as a failure stays safe."""


class MalformedReceiptError(Exception):
    """The receipt cannot be read at all."""


class TrustError(Exception):
    """The pinned keys, quorum or trust file cannot be used."""


class Trust(NamedTuple):
    """What the verifier pins. None (or no log keys) means not pinned."""

    origin: str | None = None
    log_keys: tuple[str, ...] = ()
    witness_keys: tuple[str, ...] | None = None
    quorum: int | None = None


def _b64(value, field: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedReceiptError(f"{field} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise MalformedReceiptError(f"{field} is not base64") from None


def _field(receipt: dict, name: str, kind):
    value = receipt.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MalformedReceiptError(f"receipt field {name!r} is missing or not {kind}")
    return value


def _key_label(parsed) -> str:
    # The name alone proves nothing (a made-up key can take any name); the id tells keys apart.
    return f"{parsed.name}+{parsed.key_id.hex()}"


def _label_or_none(vkey, parse) -> str | None:
    try:
        return _key_label(parse(vkey)) if isinstance(vkey, str) else None
    except note.NoteError:
        return None


def trust_build(
    *,
    origin: str | None = None,
    log_keys=(),
    witness_keys=None,
    quorum: int | None = None,
) -> Trust:
    """Checks the pins up front, so a mistyped key is a usage error, not an INVALID receipt."""
    for vkey in log_keys:
        if not isinstance(vkey, str):
            raise TrustError("a log key must be text")
        try:
            note.parse_verifier_key(vkey)
        except note.NoteError as exc:
            raise TrustError(f"log key: {exc}") from None
    for vkey in witness_keys or ():
        try:
            cosign.parse_verifier_key(vkey)
        except note.NoteError as exc:
            raise TrustError(f"witness key: {exc}") from None
    if quorum is not None and (type(quorum) is not int or quorum < 0):
        raise TrustError("quorum must be a whole number, 0 or more")
    return Trust(origin, tuple(log_keys),
                 None if witness_keys is None else tuple(witness_keys), quorum)


def trust_from_document(document) -> Trust:
    """A trust file's JSON (see the module docstring), checked field by field."""
    if not isinstance(document, dict):
        raise TrustError("a trust file is a JSON object")
    unknown = sorted(set(document) - _TRUST_FIELDS)
    if unknown:
        raise TrustError(f"unknown field(s) {', '.join(unknown)}; a trust file has "
                         f"{', '.join(sorted(_TRUST_FIELDS))}")
    origin, log_keys = document.get("origin"), document.get("log_keys")
    witness_keys, quorum = document.get("witness_keys", []), document.get("quorum")
    if not isinstance(origin, str) or not origin or "\n" in origin:
        raise TrustError("origin must be the log's origin line")
    if not isinstance(log_keys, list) or not log_keys:
        raise TrustError("log_keys must list at least one log verifier key")
    if not isinstance(witness_keys, list):
        raise TrustError("witness_keys must be a list")
    if quorum is None:
        # Left to the receipt, a quorum could be lowered by whoever made the receipt.
        raise TrustError("quorum is required (0 when the log's own signature suffices)")
    trust = trust_build(origin=origin, log_keys=log_keys, witness_keys=witness_keys, quorum=quorum)
    if trust.quorum > len(trust.witness_keys):
        raise TrustError(f"quorum {trust.quorum} needs at least as many witness keys; "
                         f"{len(trust.witness_keys)} given")
    return trust


def trust_load(path: str) -> Trust:
    try:
        with open(path, encoding="utf-8") as f:
            return trust_from_document(json.load(f))
    except (OSError, ValueError, TrustError) as exc:
        raise TrustError(f"trust file {path}: {exc}") from None


def verify_receipt(
    receipt: dict,
    *,
    log_keys: list[str] | None = None,
    witness_keys: list[str] | None = None,
    quorum: int | None = None,
    origin: str | None = None,
) -> str:
    """Returns a one-line summary when the receipt holds against the pinned keys.

    Raises ReceiptError when it does not, UntrustedReceiptError (a ReceiptError) when it
    holds only against keys it carries itself: no log_keys given, or a quorum above 0 and
    witness_keys None. Everything is still checked against the carried keys, so a broken
    receipt is a ReceiptError either way. quorum None means the receipt's own; origin,
    when given, must be the checkpoint's.
    """
    if not isinstance(receipt, dict) or receipt.get("format") != RECEIPT_FORMAT:
        raise MalformedReceiptError(f"not a {RECEIPT_FORMAT} receipt")
    index = _field(receipt, "index", int)
    leaf = _b64(receipt.get("leaf"), "leaf")
    proof_field = _field(receipt, "inclusion_proof", list)
    proof = [_b64(h, f"inclusion_proof[{i}]") for i, h in enumerate(proof_field)]
    checkpoint_note = _field(receipt, "checkpoint", str)
    log_pinned, witnesses_pinned = bool(log_keys), witness_keys is not None
    if not log_pinned:
        log_keys = [_field(receipt, "log_key", str)]
    if not witnesses_pinned:
        witness_keys = _field(receipt, "witness_keys", list)
    quorum_pinned = quorum is not None
    if not quorum_pinned:
        quorum = _field(receipt, "quorum", int)
    try:
        if origin is not None:
            # Before the signature: a receipt of another log is named as such.
            claimed = note.parse_checkpoint(note.split_note(checkpoint_note)[0]).origin
            if claimed != origin:
                raise ReceiptError(
                    f"checkpoint origin {claimed!r} is not the pinned origin {origin!r}")
        checkpoint = note.open_checkpoint(checkpoint_note, log_keys)
    except note.UnverifiedNoteError as exc:
        # Name the key it claims, so a custodian can tell a made-up key from a new one.
        carried = _label_or_none(receipt.get("log_key"), note.parse_verifier_key)
        said = f" (the receipt names {carried})" if carried else ""
        raise ReceiptError(f"checkpoint: {exc}{said}") from None
    except note.NoteError as exc:
        raise ReceiptError(f"checkpoint: {exc}") from None
    if checkpoint.origin != receipt.get("origin", checkpoint.origin):
        raise ReceiptError("checkpoint origin differs from the receipt's origin")
    if receipt.get("tree_size", checkpoint.size) != checkpoint.size:
        raise ReceiptError("checkpoint size differs from the receipt's tree_size")
    if not merkle.verify_inclusion(
        index=index,
        tree_size=checkpoint.size,
        leaf_hash=merkle.leaf_hash(leaf),
        proof=proof,
        root=checkpoint.root,
    ):
        raise ReceiptError(
            f"inclusion proof: entry {index} is not in the tree of size {checkpoint.size} "
            "with the signed root"
        )
    try:
        cosignatures = cosign.verify_cosignatures(checkpoint_note, witness_keys)
    except note.NoteError as exc:
        raise ReceiptError(f"cosignature: {exc}") from None
    names = sorted(c.name for c in cosignatures)
    if len(cosignatures) < quorum:
        raise ReceiptError(
            f"quorum not met: {len(cosignatures)} of the {len(witness_keys)} given witnesses "
            f"cosigned the checkpoint, {quorum} needed"
        )
    consistent, unpinned, flags = [], [], []
    if not log_pinned:
        label = _key_label(note.parse_verifier_key(log_keys[0]))
        consistent.append(f"the log key it carries ({label})")
        unpinned.append("log key")
        flags.append("--log-key")
    if quorum > 0 and not witnesses_pinned:
        labels = ", ".join(_key_label(cosign.parse_verifier_key(k)) for k in witness_keys)
        consistent.append(
            f"the {len(witness_keys)} witness key(s) it carries ({labels}; quorum {quorum})")
        unpinned.append("witness keys")
        flags.append("--witness-key")
    if unpinned:
        raise UntrustedReceiptError(
            f"the receipt is consistent with {' and '.join(consistent)}, but no "
            f"{' and no '.join(unpinned)} {'was' if unpinned == ['log key'] else 'were'} pinned: "
            f"pass {' and '.join(flags)}, or {_TRUST_HOWTO}"
        )
    return (
        f"entry {index} is in {checkpoint.origin} at tree size {checkpoint.size}; checkpoint "
        f"cosigned by {len(cosignatures)} witness(es) (quorum {quorum}"
        + ("" if quorum_pinned else ", the receipt's own")
        + ")"
        + (f": {', '.join(names)}" if names else "")
    )


# -- what a saved file holds --


class Part(NamedTuple):
    name: str | None  # None: the file is a receipt by itself
    receipt: dict | None
    # (verdict, sentence): why this part cannot be checked, and what to do instead.
    refusal: tuple[str, str] | None = None
    leaf_fields: dict | None = None  # what the leaf must say to be this answer's
    if_committed: dict | None = None  # what it must open to, where it commits to the field


_SAVE_WHAT = (
    "save the `ledger` object of a consent-check answer, or the whole answer of "
    "POST /api/v1/consent-checks or GET /api/v1/consent-checks/<id>"
)


def _unsealed(value) -> bool:
    return isinstance(value, dict) and value.get("sealed") is False


def _canonical(value) -> bytes:
    # As the portal hashes bulk results: sorted keys, no whitespace, UTF-8.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def document_parts(document) -> list[Part]:
    """The receipts in a saved file: a receipt, a check answer or a bulk answer."""
    if isinstance(document, dict) and document.get("format") == RECEIPT_FORMAT:
        return [Part(None, document)]
    if _unsealed(document):
        return [Part(None, None, refusal=("NOT SEALED", (
            "this ledger entry was not sealed yet when it was saved: fetch "
            "GET /api/v1/consent-checks/<id> again later and save that answer")))]
    if not (isinstance(document, dict) and "check" in document and "ledger" in document):
        raise MalformedReceiptError(
            f"this is neither a {RECEIPT_FORMAT} receipt nor a consent-check answer: {_SAVE_WHAT}"
        )
    check_id = document["check"]
    if "results_sha256" in document:
        digest = document["results_sha256"]
        if "results" in document:
            digest = hashlib.sha256(_canonical(document["results"])).hexdigest()
        fields = {"check": check_id, "results_sha256": digest}
        return [_part("bulk check", document["ledger"], fields,
                      "this bulk answer was saved before its ledger entry was sealed, and the "
                      "portal serves no bulk check again: ask the biobank operator for the "
                      f"receipt of bulk check {check_id} (its entry carries results_sha256 "
                      f"{document['results_sha256']})")]
    evidence = document.get("evidence")
    evidence = evidence if isinstance(evidence, dict) else {}
    consent = evidence.get("consent") if isinstance(evidence.get("consent"), dict) else None
    credential_id = None
    if consent is not None:
        credential_id = consent.get("credential_id")
        credential = consent.get("credential")  # answers saved before evidence was minimized
        if credential_id is None and isinstance(credential, dict):
            credential_id = credential.get("id")
    # A blinded check entry commits to its sample, study and consent credential too: each
    # must then open to what the answer says (entries sealed before blinding carry other
    # forms of them, and are bound by check id and decision).
    bound = {"sample": evidence.get("sample"), "study": evidence.get("study")}
    if credential_id is not None:
        bound["credential"] = credential_id
    parts = [_part("check", document["ledger"],
                   {"check": check_id, "decision": document.get("decision")},
                   "the check was recorded but not sealed yet when this answer was saved: fetch "
                   f"GET /api/v1/consent-checks/{check_id} again later and save that answer",
                   if_committed=bound)]
    if consent is not None:
        latest = consent.get("latest_event")
        ledger = latest.get("ledger") if isinstance(latest, dict) else None
        parts.append(_part("consent event", ledger,
                           {"credential": credential_id} if credential_id is not None else {},
                           "the consent's latest event was not sealed yet when the check was "
                           "answered, and a saved check keeps the evidence it was given: ask "
                           "again later (POST /api/v1/consent-checks) and save the new answer"))
    return parts


def _part(name: str, ledger, leaf_fields: dict, unsealed: str, if_committed: dict | None = None) -> Part:
    if _unsealed(ledger):
        return Part(name, None, refusal=("NOT SEALED", unsealed))
    if not isinstance(ledger, dict) or ledger.get("format") != RECEIPT_FORMAT:
        return Part(name, None, refusal=("receipt unreadable",
                                         f"its ledger object is not a {RECEIPT_FORMAT} receipt"))
    return Part(name, ledger, leaf_fields=leaf_fields, if_committed=if_committed)


def _check_leaf(receipt: dict, fields: dict, if_committed: dict | None = None) -> None:
    """The receipt must be of this answer's entry, not any genuine entry of the log. A
    field the entry carries in the clear is compared; one it commits to (a blinded entry,
    ledger.blinding) must be opened by the receipt's `openings` to the answer's value."""
    try:
        leaf = json.loads(_b64(receipt.get("leaf"), "leaf"))
    except ValueError:
        raise ReceiptError("the leaf is not the JSON entry of this answer") from None
    if not isinstance(leaf, dict):
        raise ReceiptError("the leaf is not the JSON entry of this answer")
    openings = receipt.get("openings")
    openings = openings if isinstance(openings, dict) else {}
    commitments = leaf.get("commit") if isinstance(leaf.get("commit"), dict) else {}
    fields = {**{k: v for k, v in (if_committed or {}).items() if k in commitments}, **fields}
    for key, expected in fields.items():
        if key in commitments:
            if key not in openings:
                raise ReceiptError(f"the entry commits to its {key} and the receipt carries no opening "
                                   "of it: save the whole answer the portal gave")
            try:
                found = blinding.opening_check(leaf, key, openings[key])
            except blinding.OpeningError as exc:
                raise ReceiptError(f"the receipt is of another entry: {exc}") from None
        else:
            found = leaf.get(key)
        if found != expected:
            raise ReceiptError(f"the receipt is of another entry: its leaf has {key} {found!r}, "
                               f"this answer {expected!r}")


def _openings_check(receipt: dict) -> str:
    """Every opening a receipt carries must open the leaf's commitment (ledger.blinding);
    the values they prove, as words for the summary line."""
    openings = receipt.get("openings")
    if openings is None:
        return ""
    if not isinstance(openings, dict):
        raise MalformedReceiptError("openings must be an object: {field: {\"value\", \"salt\"}}")
    try:
        leaf = json.loads(_b64(receipt.get("leaf"), "leaf"))
    except ValueError:
        raise ReceiptError("the leaf is not a JSON entry") from None
    proved = []
    for field in sorted(openings):
        try:
            value = blinding.opening_check(leaf, field, openings[field])
        except blinding.OpeningError as exc:
            raise ReceiptError(str(exc)) from None
        proved.append(f"{field} {value}")
    return f"; the entry commits to {', '.join(proved)}" if proved else ""


def verify_part(part: Part, trust: Trust) -> tuple[int, str]:
    """(exit code, line) for one part."""
    label = f"{part.name}: " if part.name else ""
    if part.refusal is not None:
        verdict, sentence = part.refusal
        return UNREADABLE, f"{verdict}: {label}{sentence}"
    try:
        if part.leaf_fields or part.if_committed:
            _check_leaf(part.receipt, part.leaf_fields or {}, part.if_committed)
        opened = _openings_check(part.receipt)
        summary = verify_receipt(
            part.receipt,
            log_keys=list(trust.log_keys),
            witness_keys=None if trust.witness_keys is None else list(trust.witness_keys),
            quorum=trust.quorum,
            origin=trust.origin,
        )
    except MalformedReceiptError as exc:
        return UNREADABLE, f"receipt unreadable: {label}{exc}"
    except UntrustedReceiptError as exc:
        return UNTRUSTED, f"UNTRUSTED: {label}{exc}"
    except ReceiptError as exc:
        return INVALID, f"INVALID: {label}{exc}"
    return VALID, f"VALID: {label}{summary}{opened}"


def _worst(codes: list[int]) -> int:
    for code in (INVALID, UNREADABLE, UNTRUSTED):
        if code in codes:
            return code
    return VALID


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ledger.verify", description=__doc__.split("\n")[0],
        epilog="Exit 0 valid, 1 invalid, 2 unreadable or not sealed, 3 untrusted (not pinned).")
    parser.add_argument("receipt", help="receipt or saved check answer (JSON); - for stdin")
    parser.add_argument("--trust", metavar="FILE", help="trust file (see the module docstring)")
    parser.add_argument("--log-key", action="append", default=[],
                        help="trusted log verifier key (pin)")
    parser.add_argument("--witness-key", action="append", help="trusted witness key (pin)")
    parser.add_argument("--quorum", type=int, help="cosignatures required (default: the trust "
                                                   "file's, else the receipt's)")
    args = parser.parse_args(argv)
    try:
        pinned = trust_load(args.trust) if args.trust else Trust()
        witness_keys = pinned.witness_keys
        if args.witness_key:
            witness_keys = (*(witness_keys or ()), *args.witness_key)
        trust = trust_build(
            origin=pinned.origin,
            log_keys=(*pinned.log_keys, *args.log_key),
            witness_keys=witness_keys,
            quorum=pinned.quorum if args.quorum is None else args.quorum,
        )
    except TrustError as exc:
        print(f"cannot pin: {exc}", file=sys.stderr)
        return UNREADABLE
    try:
        if args.receipt == "-":
            document = json.load(sys.stdin)
        else:
            with open(args.receipt, encoding="utf-8") as f:
                document = json.load(f)
        parts = document_parts(document)
    except (OSError, ValueError, MalformedReceiptError) as exc:
        print(f"receipt unreadable: {exc}", file=sys.stderr)
        return UNREADABLE
    codes = []
    for part in parts:
        code, line = verify_part(part, trust)
        codes.append(code)
        # Flushed line by line, so the parts stay in order when both streams go to one file.
        print(line, file=sys.stdout if code == VALID else sys.stderr, flush=True)
    return _worst(codes)


if __name__ == "__main__":
    sys.exit(main())
