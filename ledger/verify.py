"""Check a ledger receipt offline: python -m ledger.verify RECEIPT.json [options]

No database, no Django, no network: the receipt holds the leaf bytes, the inclusion
proof, the cosigned checkpoint and the keys. Pin the keys you trust with --log-key and
--witness-key (otherwise the receipt's own keys are used, which proves consistency with
them, not who they belong to). Exit 0 when valid, 1 when not, 2 when unreadable.
"""

import argparse
import base64
import binascii
import json
import sys

from ledger import cosign, merkle, note

RECEIPT_FORMAT = "consent-ledger-receipt/v1"


class ReceiptError(Exception):
    """The receipt does not prove what it claims."""


class MalformedReceiptError(Exception):
    """The receipt cannot be read at all."""


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


def verify_receipt(
    receipt: dict,
    *,
    log_keys: list[str] | None = None,
    witness_keys: list[str] | None = None,
    quorum: int | None = None,
) -> str:
    """Returns a one-line summary when the receipt holds; raises ReceiptError otherwise."""
    if not isinstance(receipt, dict) or receipt.get("format") != RECEIPT_FORMAT:
        raise MalformedReceiptError(f"not a {RECEIPT_FORMAT} receipt")
    index = _field(receipt, "index", int)
    leaf = _b64(receipt.get("leaf"), "leaf")
    proof_field = _field(receipt, "inclusion_proof", list)
    proof = [_b64(h, f"inclusion_proof[{i}]") for i, h in enumerate(proof_field)]
    checkpoint_note = _field(receipt, "checkpoint", str)
    log_keys = log_keys or [_field(receipt, "log_key", str)]
    if witness_keys is None:
        witness_keys = _field(receipt, "witness_keys", list)
    if quorum is None:
        quorum = _field(receipt, "quorum", int)
    try:
        checkpoint = note.open_checkpoint(checkpoint_note, log_keys)
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
    return (
        f"entry {index} is in {checkpoint.origin} at tree size {checkpoint.size}; checkpoint "
        f"cosigned by {len(cosignatures)} witness(es) (quorum {quorum})"
        + (f": {', '.join(names)}" if names else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ledger.verify", description=__doc__.split("\n")[0])
    parser.add_argument("receipt", help="receipt JSON file, or - for standard input")
    parser.add_argument("--log-key", action="append", help="trusted log verifier key (pin)")
    parser.add_argument("--witness-key", action="append", help="trusted witness key (pin)")
    parser.add_argument("--quorum", type=int, help="cosignatures required (default: receipt's)")
    args = parser.parse_args(argv)
    try:
        if args.receipt == "-":
            receipt = json.load(sys.stdin)
        else:
            with open(args.receipt, encoding="utf-8") as f:
                receipt = json.load(f)
        summary = verify_receipt(
            receipt, log_keys=args.log_key, witness_keys=args.witness_key, quorum=args.quorum
        )
    except (OSError, ValueError, MalformedReceiptError) as exc:
        print(f"receipt unreadable: {exc}", file=sys.stderr)
        return 2
    except ReceiptError as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    print(f"VALID: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
