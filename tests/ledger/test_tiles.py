"""ledger.tiles, against the reference Merkle tree: where subtrees lie, how batches extend
the right edge, and what the sequencer refuses to store."""

import pytest

from ledger import merkle, tiles
from tests.ledger.reference import mth

PAYLOADS = [b'{"kind":"t","i":%d}' % i for i in range(1300)]


def build(batches: list[int]) -> tuple[dict, dict]:
    """Bundles and tiles after sealing these batch sizes in turn, as the sequencer does."""
    bundles, stored, tree = {}, {}, merkle.CompactRange()
    for count in batches:
        size = tree.size
        new = PAYLOADS[size : size + count]
        runs = tree.extend([merkle.leaf_hash(p) for p in new])
        partial = bundles.get(size // tiles.WIDTH) if size % tiles.WIDTH else None
        bundles.update(tiles.extend_bundles(size, new, partial))
        stored.update(tiles.extend_tiles(size, runs, stored))
    return bundles, stored


@pytest.mark.parametrize("batches", [[1300], [1] * 300 + [1000], [255, 2, 254, 789], [256, 256, 788]])
def test_any_batching_stores_the_same_bundles_and_tiles(batches):
    bundles, stored = build(batches)
    assert bundles == {n: b"\n".join(PAYLOADS[n * 256 : n * 256 + 256]) for n in range(6)}
    leaves = [merkle.leaf_hash(p) for p in PAYLOADS]
    assert stored == {
        **{(0, n): b"".join(leaves[n * 256 : n * 256 + 256]) for n in range(6)},
        (1, 0): b"".join(mth(PAYLOADS[i * 256 : i * 256 + 256]) for i in range(5)),
    }


def test_every_complete_subtree_is_read_from_one_tile():
    _, stored = build([1300])
    pairs = [(level, index) for level in range(11) for index in range(1300 >> level)]
    found = tiles.subtrees_from(pairs, stored)
    assert found == {(lv, i): mth(PAYLOADS[i << lv : (i + 1) << lv]) for lv, i in pairs}
    # Subtrees the log does not hold yet are absent, not guessed.
    assert tiles.subtrees_from([(0, 1300), (8, 5), (2, 325), (11, 0)], stored) == {}
    assert tiles.locate(11, 1) == (1, 0, 8, 8) and tiles.locate(3, 40) == (0, 1, 64, 8)


def test_the_edge_is_the_partial_tile_of_each_level():
    assert tiles.edge(0) == [] and tiles.edge(256) == [(1, 0)] and tiles.edge(65536) == [(2, 0)]
    assert tiles.edge(1300) == [(0, 5), (1, 0)] and tiles.edge(512) == [(1, 0)]


def test_a_stored_edge_of_the_wrong_length_is_refused():
    bundles, stored = build([300])
    tree = merkle.CompactRange()
    tree.extend([merkle.leaf_hash(p) for p in PAYLOADS[:300]])
    runs = tree.extend([merkle.leaf_hash(PAYLOADS[300])])
    short = {**stored, (0, 1): stored[(0, 1)][:-32]}
    with pytest.raises(ValueError, match="hash tile 0/1 holds 43 hashes; a tree of 300 leaves needs 44"):
        tiles.extend_tiles(300, runs, short)
    with pytest.raises(ValueError, match="entry bundle 1 holds 43 entries; a log of 300 needs 44"):
        tiles.extend_bundles(300, [PAYLOADS[300]], bundles[1].rsplit(b"\n", 1)[0])
    with pytest.raises(ValueError, match="entry bundle 1 holds 0 entries"):
        tiles.extend_bundles(300, [PAYLOADS[300]], None)


def test_a_payload_holding_a_newline_is_refused():
    with pytest.raises(ValueError, match="raw newline"):
        tiles.extend_bundles(0, [b'{"a":1}', b'{"a":\n2}'], None)
