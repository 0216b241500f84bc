"""Our proofs, checkpoints and signatures against published vectors and a second
implementation: Go's golang.org/x/mod/sumdb/note and sumdb/tlog (Debian's
golang-golang-x-mod-dev), built offline. Without Go this skips locally and fails in CI."""

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ledger import merkle, selectors, services, tasks
from ledger.models import Entry
from tests.conftest import require_or_skip

GO_SOURCE = Path(__file__).parent / "go" / "main.go"
X_MOD = Path("/usr/share/gocode/src/golang.org/x/mod/sumdb")

# The RFC 6962 8-leaf test tree, from transparency-dev/merkle (testonly/constants.go and
# proof/verify_test.go; Apache-2.0). Inclusion vectors there number leaves from 1.
LEAVES = [bytes.fromhex(h) for h in
          ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
           "606162636465666768696a6b6c6d6e6f"]]
ROOTS = [bytes.fromhex(h) for h in [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]]
NODES = {
    (0, 0): "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    (0, 7): "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    (1, 0): "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    (1, 3): "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    (2, 1): "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    (3, 0): "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
H = {  # the proof hashes the vectors use
    "96a2": "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "5f08": "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "6b47": "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    "bc1a": "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "ca85": "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37e": "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "fac5": "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "6e34": "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "0ebc": "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "b086": "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
}
INCLUSION = [(1, 1, []), (1, 8, ["96a2", "5f08", "6b47"]), (6, 8, ["bc1a", "ca85", "d37e"]),
             (3, 3, ["fac5"]), (2, 5, ["6e34", "5f08", "bc1a"])]
CONSISTENCY = [(1, 1, []), (1, 8, ["96a2", "5f08", "6b47"]), (6, 8, ["0ebc", "ca85", "d37e"]),
               (2, 5, ["5f08", "bc1a"]), (6, 7, ["0ebc", "b086", "d37e"])]


def stored_tree(leaves):
    nodes = {}
    tree = merkle.CompactRange()
    for leaf in leaves:
        for level, index, digest in tree.append(merkle.leaf_hash(leaf)):
            nodes[(level, index)] = digest
    return nodes


def test_published_roots_and_subtree_hashes():
    nodes = stored_tree(LEAVES)
    for (level, index), digest in NODES.items():
        assert nodes[(level, index)].hex() == digest
    for size, root in enumerate(ROOTS):
        assert merkle.root_hash(size, lambda lv, i: nodes[(lv, i)]) == root


@pytest.mark.parametrize("leaf, size, proof", INCLUSION)
def test_published_inclusion_proofs(leaf, size, proof):
    nodes = stored_tree(LEAVES)
    expected = [bytes.fromhex(H[h]) for h in proof]
    assert merkle.inclusion_proof(leaf - 1, size, lambda lv, i: nodes[(lv, i)]) == expected
    assert merkle.verify_inclusion(index=leaf - 1, tree_size=size, proof=expected,
                                   leaf_hash=merkle.leaf_hash(LEAVES[leaf - 1]), root=ROOTS[size])


@pytest.mark.parametrize("first, second, proof", CONSISTENCY)
def test_published_consistency_proofs(first, second, proof):
    nodes = stored_tree(LEAVES)
    expected = [bytes.fromhex(H[h]) for h in proof]
    assert merkle.consistency_proof(first, second, lambda lv, i: nodes[(lv, i)]) == expected
    assert merkle.verify_consistency(first=first, second=second, proof=expected,
                                     first_root=ROOTS[first], second_root=ROOTS[second])


# -- the Go implementation --


@pytest.fixture(scope="session")
def go_verifier(tmp_path_factory):
    go = shutil.which("go")
    if go is None or not X_MOD.is_dir():
        require_or_skip("Go and golang-golang-x-mod-dev are not installed (apt-get install "
                        "golang-go golang-golang-x-mod-dev)")
    out = tmp_path_factory.mktemp("go")
    env = {**os.environ, "GOPATH": "/usr/share/gocode", "GO111MODULE": "off",
           "GOCACHE": str(out / "cache"), "GOFLAGS": "", "GOPROXY": "off"}
    binary = out / "verifier"
    result = subprocess.run([go, "build", "-o", str(binary), str(GO_SOURCE)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return binary


def go(binary, mode: str, data: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), mode], input=json.dumps(data), capture_output=True,
                          text=True, timeout=120)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_every_proof_up_to_size_40_matches_go_tlog(go_verifier):
    leaves = LEAVES + [f"leaf {i}".encode() for i in range(32)]
    result = go(go_verifier, "prove", {"leaves": [b64(x) for x in leaves], "max": len(leaves)})
    assert result.returncode == 0, result.stderr
    theirs = json.loads(result.stdout)
    nodes = stored_tree(leaves)
    get = lambda lv, i: nodes[(lv, i)]  # noqa: E731
    checked = 0
    for second in range(1, len(leaves) + 1):
        assert b64(merkle.root_hash(second, get)) == theirs["roots"][str(second)]
        for first in range(second):
            key = f"{first},{second}"
            assert [b64(h) for h in merkle.inclusion_proof(first, second, get)] == \
                theirs["inclusion"][key], key
            if first:
                assert [b64(h) for h in merkle.consistency_proof(first, second, get)] == \
                    theirs["consistency"][key], key
            checked += 1
    assert checked == 40 * 41 // 2


@pytest.mark.django_db
def test_go_accepts_our_checkpoint_receipt_and_consistency_proof(go_verifier, consortium):
    witnesses, _ = consortium
    for i in range(7):
        services.entry_append(kind="consent.granted", payload={"n": f"p-{i}"})
    tasks.seal_pending()
    old_root = selectors.checkpoint_latest().root_hash
    for i in range(7, 13):
        services.entry_append(kind="consent.granted", payload={"n": f"p-{i}"})
    tasks.seal_pending()
    receipt = selectors.entry_receipt(entry_id=Entry.objects.get(index=9).id)
    data = {
        "note": receipt["checkpoint"], "log_key": receipt["log_key"],
        "witness_keys": receipt["witness_keys"], "index": receipt["index"],
        "leaf": receipt["leaf"], "inclusion_proof": receipt["inclusion_proof"],
        "old_size": 7, "old_root": b64(bytes(old_root)),
        "consistency_proof": [b64(h) for h in selectors.proof_consistency(first=7, second=13)],
    }
    result = go(go_verifier, "verify", data)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "ok origin=localhost/consent-portal/ledger size=13 "
        "signer=localhost/consent-portal/ledger cosigners=witness.example/w1,witness.example/w2"
    )
    # The same checks fail in Go when anything is off, so the pass above means something.
    for key, value in [("index", 8), ("old_size", 6),
                       ("leaf", b64(b"other")),
                       ("note", data["note"].replace("\n13\n", "\n12\n"))]:
        assert go(go_verifier, "verify", {**data, key: value}).returncode == 1, key


@pytest.mark.django_db
def test_go_tlog_reads_our_hash_tiles_as_served(go_verifier):
    # 66,000 entries: full and partial tiles at levels 0 and 1, and a level-2 tile holding
    # the one subtree of 65,536 leaves. Sealed as the sequencer seals, in uneven batches.
    from ledger.canonical import canonical_json
    from ledger.models import HashTile

    size = 66_000
    Entry.objects.bulk_create(Entry(payload=canonical_json({"kind": "t", "i": i})) for i in range(size))
    services.ledger_seal_pending(max_batch=9_999)
    root = bytes(selectors.checkpoint_latest().root_hash)
    # Every tile as the API serves it (C2SP tlog-tiles paths), as a tiles client fetches it.
    from rest_framework.test import APIClient

    from ledger import tiles

    api = APIClient()
    api.force_authenticate(token="member-token")
    stored = {}
    for t in HashTile.objects.all():
        width = len(t.hashes) // 32
        suffix = "" if width == tiles.WIDTH else f".p/{width}"
        served = api.get(f"/api/v1/ledger/tile/{t.level}/{tiles.tile_path(t.index)}{suffix}")
        assert served.status_code == 200 and served.content == bytes(t.hashes)
        stored[f"{t.level}/{t.index}"] = b64(served.content)
    assert {"2/0", "1/1", "0/257"} <= set(stored)
    indexes = [0, 1, 255, 256, 65_535, 65_536, 65_999, 12_345]
    old_sizes = [1, 256, 257, 65_536, 65_537, 65_999, 4_321]
    result = go(go_verifier, "tiles", {"size": size, "root": b64(root), "tiles": stored,
                                       "indexes": indexes, "old_sizes": old_sizes})
    assert result.returncode == 0, result.stderr
    theirs = json.loads(result.stdout)
    assert theirs["root"] == b64(root)
    for index in indexes:
        assert [b64(h) for h in selectors.proof_inclusion(index=index, tree_size=size)] == \
            theirs["inclusion"][str(index)], index
    for old in old_sizes:
        assert [b64(h) for h in selectors.proof_consistency(first=old, second=size)] == \
            theirs["consistency"][str(old)], old
    # A stored hash altered in a tile on the path to the root: tlog refuses the tile. (x/mod
    # 0.7.0 authenticates only the tiles it hashes to the root, so the test alters those.)
    for key in ("2/0", "0/257"):
        altered = bytearray(base64.b64decode(stored[key]))
        altered[5] ^= 1
        result = go(go_verifier, "tiles", {"size": size, "root": b64(root), "indexes": [3], "old_sizes": [],
                                           "tiles": {**stored, key: b64(bytes(altered))}})
        assert result.returncode == 1 and "inconsistent tile" in result.stderr, (key, result.stderr)
