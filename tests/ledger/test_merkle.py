"""ledger.merkle against a naive RFC 9162 reference, for every tree size 1..70."""

import hashlib
import random

import pytest

from ledger import merkle
from tests.ledger.reference import mth, path, subproof

MAX_SIZE = 70
DATA = [f"leaf {i}".encode() for i in range(MAX_SIZE)]


# -- A stored tree: every complete subtree, as the database keeps them. --


def stored_subtrees() -> dict[tuple[int, int], bytes]:
    tree = merkle.CompactRange()
    store = {}
    for data in DATA:
        for level, index, digest in tree.append(merkle.leaf_hash(data)):
            store[(level, index)] = digest
    return store


STORE = stored_subtrees()


def getter_for(tree_size: int, reads: list | None = None):
    """Serves only subtrees inside [0, tree_size): a proof must not read past its tree."""

    def get(level: int, index: int) -> bytes:
        assert (index + 1) << level <= tree_size, f"read ({level}, {index}) beyond size {tree_size}"
        if reads is not None:
            reads.append((level, index))
        return STORE[(level, index)]

    return get


def flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


def test_leaf_and_node_hashes_use_rfc_prefixes():
    assert merkle.leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert (
        merkle.node_hash(b"L" * 32, b"R" * 32)
        == hashlib.sha256(b"\x01" + b"L" * 32 + b"R" * 32).digest()
    )
    assert hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT


def test_every_complete_subtree_matches_reference():
    for (level, index), digest in STORE.items():
        assert digest == mth(DATA[index << level : (index + 1) << level])
    assert len(STORE) == 2 * MAX_SIZE - bin(MAX_SIZE).count("1")


@pytest.mark.parametrize("n", range(MAX_SIZE + 1))
def test_roots_from_stored_subtrees_and_from_streaming(n):
    assert merkle.root_hash(n, getter_for(n)) == mth(DATA[:n])
    tree = merkle.CompactRange()
    for data in DATA[:n]:
        tree.append(merkle.leaf_hash(data))
    assert tree.size == n and tree.root() == mth(DATA[:n])
    # A sequencer resumes from the stored frontier alone.
    frontier = merkle.subtrees(0, n)
    assert len(frontier) == bin(n).count("1")
    resumed = merkle.CompactRange(n, [STORE[p] for p in frontier])
    for data in DATA[n:]:
        resumed.append(merkle.leaf_hash(data))
    assert resumed.root() == mth(DATA)


@pytest.mark.parametrize("n", range(1, MAX_SIZE + 1))
def test_inclusion_proofs_match_reference_and_verify(n):
    root = mth(DATA[:n])
    for m in range(n):
        proof = merkle.inclusion_proof(m, n, getter_for(n))
        assert proof == path(m, DATA[:n])
        assert merkle.verify_inclusion(
            index=m, tree_size=n, leaf_hash=merkle.leaf_hash(DATA[m]), proof=proof, root=root
        )


@pytest.mark.parametrize("n", range(1, MAX_SIZE + 1))
def test_consistency_proofs_match_reference_and_verify(n):
    root = mth(DATA[:n])
    for m in range(1, n + 1):
        proof = merkle.consistency_proof(m, n, getter_for(n))
        assert proof == subproof(m, DATA[:n], True)
        assert merkle.verify_consistency(
            first=m, second=n, first_root=mth(DATA[:m]), second_root=root, proof=proof
        )


@pytest.mark.parametrize("n", range(1, 34))
def test_verify_inclusion_rejects_tampering(n):
    root = mth(DATA[:n])
    for m in range(n):
        leaf = merkle.leaf_hash(DATA[m])
        proof = path(m, DATA[:n])

        def ok(index=m, tree_size=n, leaf_hash=leaf, proof=proof, root=root):
            return merkle.verify_inclusion(
                index=index, tree_size=tree_size, leaf_hash=leaf_hash, proof=proof, root=root
            )

        assert ok()
        assert not ok(leaf_hash=flip(leaf))
        assert not ok(root=flip(root))
        for i in range(len(proof)):
            assert not ok(proof=proof[:i] + [flip(proof[i])] + proof[i + 1 :])
        if proof:
            assert not ok(proof=proof[:-1])
        assert not ok(proof=proof + [root])
        for other in range(n):
            if other != m:
                assert not ok(index=other)
        assert not ok(index=n)
        assert not ok(index=-1)
        assert not ok(tree_size=0, index=0)


@pytest.mark.parametrize("n", range(2, 34))
def test_verify_consistency_rejects_tampering(n):
    second_root = mth(DATA[:n])
    for m in range(1, n):
        first_root = mth(DATA[:m])
        proof = subproof(m, DATA[:n], True)

        def ok(first=m, second=n, first_root=first_root, second_root=second_root, proof=proof):
            return merkle.verify_consistency(
                first=first,
                second=second,
                first_root=first_root,
                second_root=second_root,
                proof=proof,
            )

        assert ok()
        assert not ok(first_root=flip(first_root))
        assert not ok(second_root=flip(second_root))
        for i in range(len(proof)):
            assert not ok(proof=proof[:i] + [flip(proof[i])] + proof[i + 1 :])
        assert not ok(proof=proof[:-1])
        assert not ok(proof=proof + [second_root])
        assert not ok(first=n, second=m, first_root=second_root, second_root=first_root)
        assert not ok(proof=[])


def test_consistency_edge_cases():
    root = mth(DATA[:5])
    assert merkle.verify_consistency(first=5, second=5, first_root=root, second_root=root, proof=[])
    assert not merkle.verify_consistency(
        first=5, second=5, first_root=root, second_root=flip(root), proof=[]
    )
    assert not merkle.verify_consistency(
        first=5, second=5, first_root=root, second_root=root, proof=[root]
    )
    assert merkle.verify_consistency(
        first=0, second=5, first_root=merkle.EMPTY_ROOT, second_root=root, proof=[]
    )
    assert not merkle.verify_consistency(
        first=0, second=5, first_root=root, second_root=root, proof=[]
    )
    assert merkle.consistency_ranges(5, 5) == [] and merkle.consistency_ranges(0, 5) == []
    with pytest.raises(ValueError):
        merkle.consistency_ranges(6, 5)
    with pytest.raises(ValueError):
        merkle.inclusion_ranges(5, 5)


def test_proofs_read_logarithmically_many_stored_subtrees():
    rng = random.Random(9162)
    for _ in range(300):
        n = rng.randrange(1, 10**12)
        bound = 2 * n.bit_length()
        m = rng.randrange(n)
        assert len(merkle.subtrees_of(merkle.inclusion_ranges(m, n))) <= bound
        first = rng.randrange(1, n + 1)
        assert len(merkle.subtrees_of(merkle.consistency_ranges(first, n))) <= bound
    # And for the small trees, what the getter was asked is exactly that set.
    reads: list = []
    merkle.inclusion_proof(37, 70, getter_for(70, reads))
    assert set(reads) == merkle.subtrees_of(merkle.inclusion_ranges(37, 70))


def test_extend_builds_the_same_tree_and_subtrees_as_append():
    import random

    rng = random.Random(7)
    for _ in range(200):
        before, count = rng.randrange(0, 70), rng.randrange(0, 70)
        leaves = [merkle.leaf_hash(str(i).encode()) for i in range(before + count)]
        one, many = merkle.CompactRange(), merkle.CompactRange()
        for leaf in leaves[:before]:
            one.append(leaf)
            many.append(leaf)
        expected = {}
        for leaf in leaves[before:]:
            expected.update({(lv, i): h for lv, i, h in one.append(leaf)})
        got, position = {}, before
        while position < before + count:
            piece = leaves[position : position + rng.randrange(1, 20)]
            position += len(piece)
            for level, first, hashes in many.extend(piece):
                got.update({(level, first + k): h for k, h in enumerate(hashes)})
        assert got == expected
        assert (many.size, many.root()) == (one.size, one.root())
