"""Reads: tree head, checkpoints, entries and proofs. Each proof is one query."""

import base64

from django.conf import settings

from ledger import merkle, note
from ledger.keys import ledger_verifier_key
from ledger.models import Checkpoint, Entry, TreeNode, TreeState


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def subtree_hashes(*, pairs) -> dict[tuple[int, int], bytes]:
    """Stored subtree hashes for these (level, index) pairs, in one query."""
    if not pairs:
        return {}
    rows = TreeNode.objects.filter(pk__in=list(pairs)).values_list("level", "index", "hash")
    return {(level, index): bytes(h) for level, index, h in rows}


def _hashes(ranges, extra=()) -> dict[tuple[int, int], bytes]:
    needed = merkle.subtrees_of(ranges) | set(extra)
    found = subtree_hashes(pairs=needed)
    if len(found) != len(needed):
        raise LookupError("the tree is smaller than the requested size")
    return found


def tree_size() -> int:
    return TreeState.objects.filter(id=1).values_list("size", flat=True).first() or 0


def checkpoint_latest() -> Checkpoint | None:
    return Checkpoint.objects.order_by("-size").first()


def entry_payload(*, index: int) -> bytes | None:
    """The sealed leaf's bytes exactly as hashed, or None."""
    payload = Entry.objects.filter(index=index).values_list("payload", flat=True).first()
    return None if payload is None else bytes(payload)


def leaf_inclusion(*, index: int, tree_size: int) -> tuple[bytes, list[bytes]]:
    """The leaf hash at index and its inclusion proof in the tree of tree_size, in one query."""
    ranges = merkle.inclusion_ranges(index, tree_size)
    hashes = _hashes(ranges, extra=[(0, index)])
    return hashes[(0, index)], merkle.hash_ranges(ranges, lambda level, i: hashes[(level, i)])


def proof_inclusion(*, index: int, tree_size: int) -> list[bytes]:
    return leaf_inclusion(index=index, tree_size=tree_size)[1]


def proof_consistency(*, first: int, second: int) -> list[bytes]:
    ranges = merkle.consistency_ranges(first, second)
    hashes = _hashes(ranges)
    return merkle.hash_ranges(ranges, lambda level, i: hashes[(level, i)])


def entry_evidence(*, entry_id: int) -> dict | None:
    """Proof that a sealed entry is in the latest signed checkpoint; None while pending.

    Raises Entry.DoesNotExist for an unknown id.
    """
    index = Entry.objects.values_list("index", flat=True).get(id=entry_id)
    if index is None:
        return None
    checkpoint = checkpoint_latest()
    leaf, proof = leaf_inclusion(index=index, tree_size=checkpoint.size)
    body, _ = note.split_note(checkpoint.note)
    return {
        "index": index,
        "tree_size": checkpoint.size,
        "leaf_hash": _b64(leaf),
        "inclusion_proof": [_b64(h) for h in proof],
        "root_hash": _b64(bytes(checkpoint.root_hash)),
        "checkpoint": checkpoint.note,
        "origin": note.parse_checkpoint(body).origin,
        "verifier_key": ledger_verifier_key(),
    }


def ledger_info() -> dict:
    state = TreeState.objects.filter(id=1).first()
    size = state.size if state else 0
    return {
        "origin": settings.LEDGER_ORIGIN,
        "size": size,
        "root_hash": _b64(bytes(state.root_hash) if state else merkle.EMPTY_ROOT),
        # Made on first use, so a consumer can pin it before anything is sealed.
        "verifier_key": ledger_verifier_key(),
        # The head row changes only when a batch is sealed.
        "last_sealed_at": state.updated_at if size else None,
        "pending": Entry.objects.filter(index__isnull=True).count(),
    }
