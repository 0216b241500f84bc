"""Merkle tree hashing, proofs and proof verification per RFC 9162 §2.1.

Pure Python, no Django: the offline receipt verifier imports this module alone.

Stored trees are addressed by complete subtrees: (level, index) is the subtree of 2**level
leaves starting at leaf index * 2**level, so level 0 holds the leaf hashes. Any range of
leaves the RFC's recursion names is a run of such subtrees, largest first, and its hash is
their right fold; that is what lets proofs for any tree size read O(log n) stored hashes.
"""

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
# MTH({}) = SHA-256() (RFC 9162 §2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()

Range = tuple[int, int]  # leaves [start, end)
Subtree = tuple[int, int]  # (level, index at that level)
SubtreeGetter = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtrees(start: int, end: int) -> list[Subtree]:
    """The complete subtrees covering leaves [start, end), left to right.

    For every range the RFC's recursion produces (and for [0, n)) they come largest first.
    """
    out = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start:
            # A subtree must start at a multiple of its own width.
            level = min(level, (start & -start).bit_length() - 1)
        out.append((level, start >> level))
        start += 1 << level
    return out


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its complete subtrees' hashes (largest first): a right fold."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def inclusion_ranges(index: int, tree_size: int) -> list[Range]:
    """The leaf ranges whose MTHs form PATH(index, D[tree_size]) (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < tree_size:
        raise ValueError(f"index {index} is not in a tree of size {tree_size}")
    ranges: list[Range] = []
    start, end = 0, tree_size
    # The RFC recursion appends the sibling after recursing, so collect and reverse.
    while end - start > 1:
        k = _split(end - start)
        if index - start < k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start = start + k
    ranges.reverse()
    return ranges


def consistency_ranges(first: int, second: int) -> list[Range]:
    """The leaf ranges whose MTHs form PROOF(first, D[second]) (RFC 9162 §2.1.4.1).

    first == second, and first == 0, give the empty proof.
    """
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first == 0 or first == second:
        return []
    ranges: list[Range] = []
    start, end, m, complete = 0, second, first, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, m, complete = start + k, m - k, False
    if not complete:
        # SUBPROOF(m, D[m], false) = {MTH(D[m])}
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def subtrees_of(ranges: Iterable[Range]) -> set[Subtree]:
    """Every stored subtree needed to hash these ranges: fetch them in one go."""
    return {subtree for start, end in ranges for subtree in subtrees(start, end)}


def hash_ranges(ranges: Iterable[Range], get_subtree: SubtreeGetter) -> list[bytes]:
    return [
        fold([get_subtree(level, i) for level, i in subtrees(start, end)]) for start, end in ranges
    ]


def inclusion_proof(index: int, tree_size: int, get_subtree: SubtreeGetter) -> list[bytes]:
    return hash_ranges(inclusion_ranges(index, tree_size), get_subtree)


def consistency_proof(first: int, second: int, get_subtree: SubtreeGetter) -> list[bytes]:
    return hash_ranges(consistency_ranges(first, second), get_subtree)


def root_hash(tree_size: int, get_subtree: SubtreeGetter) -> bytes:
    return fold([get_subtree(level, i) for level, i in subtrees(0, tree_size)])


class CompactRange:
    """Streaming tree builder: keeps only the complete subtrees covering [0, size).

    At most log2(size) + 1 hashes, so a verifier can stream any number of leaves and a
    sequencer can extend the tree from the stored subtrees alone.
    """

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()):
        levels = [level for level, _ in subtrees(0, size)]
        hashes = list(hashes)
        if len(hashes) != len(levels):
            raise ValueError(f"a tree of size {size} needs {len(levels)} subtree hashes")
        self.size = size
        self._stack = list(zip(levels, hashes, strict=True))

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Adds a leaf hash; returns the subtrees it completes as (level, index, hash)."""
        index = self.size
        self.size += 1
        completed = [(0, index, leaf)]
        self._stack.append((0, leaf))
        while len(self._stack) > 1 and self._stack[-1][0] == self._stack[-2][0]:
            level, right = self._stack.pop()
            _, left = self._stack.pop()
            merged = node_hash(left, right)
            self._stack.append((level + 1, merged))
            completed.append((level + 1, index >> (level + 1), merged))
        return completed

    def extend(self, leaves: Sequence[bytes]) -> list[tuple[int, int, list[bytes]]]:
        """Adds many leaf hashes at once, hashing level by level (same tree as append).

        Returns the subtrees they complete as runs (level, first index, hashes), one per
        level from 0 up, each run's indexes consecutive.
        """
        if not leaves:
            return []
        sha256 = hashlib.sha256
        start, end = self.size, self.size + len(leaves)
        pending = dict(self._stack)  # level -> hash of the one incomplete-pair subtree
        runs = []
        level, first, run = 0, start, list(leaves)
        while run:
            runs.append((level, first, run))
            if first & 1:
                # Its left sibling is the old frontier subtree at this level.
                run = [pending[level], *run]
                first -= 1
            pairs = iter(run)  # zip(pairs, pairs) takes them two by two, an odd last one left
            run = [sha256(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs, strict=False)]
            level, first = level + 1, first >> 1
        by_level = {lv: (i, hashes) for lv, i, hashes in runs}
        stack = []
        for lv, i in subtrees(0, end):
            if lv in by_level and by_level[lv][0] <= i < by_level[lv][0] + len(by_level[lv][1]):
                stack.append((lv, by_level[lv][1][i - by_level[lv][0]]))
            else:
                stack.append((lv, pending[lv]))
        self.size, self._stack = end, stack
        return runs

    def root(self) -> bytes:
        return fold([h for _, h in self._stack])

    def frontier(self) -> list[tuple[int, bytes]]:
        """The (level, hash) of the complete subtrees covering [0, size), largest first."""
        return list(self._stack)


def verify_inclusion(
    *, index: int, tree_size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    if not 0 <= index < tree_size:
        return False
    if any(len(p) != HASH_SIZE for p in proof):
        return False
    fn, sn = index, tree_size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(r, root)


def verify_consistency(
    *, first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, step by step, for 0 < first < second.

    The RFC defines proofs only for 0 < first < second; like other log clients we accept
    the empty proof between equal trees and from the empty tree.
    """
    if not 0 <= first <= second:
        return False
    if first == second:
        return not proof and hmac.compare_digest(first_root, second_root)
    if first == 0:
        return not proof and hmac.compare_digest(first_root, EMPTY_ROOT)
    if not proof or any(len(c) != HASH_SIZE for c in proof):
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(fr, first_root) and hmac.compare_digest(sr, second_root)
