"""The log served as C2SP tlog-tiles: hash tiles and entry bundles, full and partial, with
the spec's paths, immutable caching, and a clear 4xx for anything else."""

import pytest
from rest_framework.test import APIClient

from ledger import merkle, services, tiles
from ledger.models import Entry, HashTile
from ledger.canonical import canonical_json
from tests.ledger import tamper
from tests.ledger.reference import mth
# The read API's URLs and its authenticated client fixture, as test_views mounts them.
from tests.ledger.test_views import API, assert_error, client, urlpatterns  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


@pytest.fixture
def log():
    """600 sealed entries: leaf tiles 0 and 1 full, 2 of 88; a level-1 tile of 2."""
    Entry.objects.bulk_create(Entry(payload=canonical_json({"kind": "t", "i": i})) for i in range(600))
    services.ledger_seal_pending(max_batch=250)
    return [canonical_json({"kind": "t", "i": i}) for i in range(600)]


def unbundle(data: bytes) -> list[bytes]:
    out = []
    while data:
        n = int.from_bytes(data[:2], "big")
        out.append(data[2 : 2 + n])
        data = data[2 + n :]
    return out


def test_hash_tiles_full_and_partial(client, log):
    leaves = [merkle.leaf_hash(p) for p in log]
    full = client.get(API + "tile/0/001")
    assert full.status_code == 200 and full["Content-Type"] == "application/octet-stream"
    assert full.content == b"".join(leaves[256:512])
    assert full["Cache-Control"] == "private, max-age=31536000, immutable"
    assert client.get(API + "tile/0/002.p/88").content == b"".join(leaves[512:600])
    assert client.get(API + "tile/0/002.p/5").content == b"".join(leaves[512:517])
    # Level 1: the subtrees of 256 leaves.
    assert client.get(API + "tile/1/000.p/2").content == mth(log[:256]) + mth(log[256:512])
    # Not held (yet): a full tile of a partial one, wider than held, beyond the log.
    for missing in ("tile/0/002", "tile/0/002.p/89", "tile/0/003.p/1", "tile/1/000", "tile/2/000.p/1"):
        assert_error(client.get(API + missing), 404)


def test_entry_bundles_full_and_partial(client, log):
    assert unbundle(client.get(API + "tile/entries/000").content) == log[:256]
    partial = client.get(API + "tile/entries/002.p/88")
    assert partial.status_code == 200 and unbundle(partial.content) == log[512:]
    assert unbundle(client.get(API + "tile/entries/002.p/3").content) == log[512:515]
    assert_error(client.get(API + "tile/entries/002"), 404)
    assert_error(client.get(API + "tile/entries/003.p/1"), 404)


def test_tile_paths_the_spec_would_not_write_are_refused(client, log):
    for bad, field in [("tile/0/x000/001", "tile"), ("tile/0/001.p/0", "width"),
                       ("tile/0/001.p/256", "width"), ("tile/0/002.p/088", "width"),
                       ("tile/64/000", "level"), ("tile/entries/x000/000", "tile")]:
        assert_error(client.get(API + bad), 400, field)
    for unrouted in ("tile/0/1", "tile/0/0001", "tile/0/001.p/", "tile/entries/1", "tile/a/001"):
        assert client.get(API + unrouted).status_code == 404


def test_large_indexes_use_the_spec_path_encoding(client, log):
    assert tiles.tile_path(1234067) == "x001/x234/067"
    HashTile.objects.create(level=0, index=1234067, hashes=b"\x07" * 64)
    assert client.get(API + "tile/0/x001/x234/067.p/2").content == b"\x07" * 64


def test_tiles_need_a_token_unless_the_log_is_public(log, settings):
    anonymous = APIClient()
    assert_error(anonymous.get(API + "tile/0/000"), 401)
    assert_error(anonymous.get(API + "tile/entries/000"), 401)
    settings.LEDGER_PUBLIC = True
    response = anonymous.get(API + "tile/0/000")
    assert response.status_code == 200 and response["Cache-Control"].startswith("public,")


def test_tiles_are_served_as_stored_not_recomputed(client, log):
    # What an auditor fetches is what verify_ledger checks: alter a stored tile and the
    # served one changes with it (and verification fails).
    tamper.hash_set(0, 3, b"\x01" * 32)
    assert client.get(API + "tile/0/000").content[96:128] == b"\x01" * 32
    assert not services.ledger_verify().ok


def test_an_entry_too_large_for_a_bundle_is_refused():
    with pytest.raises(ValueError, match="payload is 70.* bytes; a ledger entry holds at most 65535"):
        services.entry_append(kind="consent.check", payload={"blob": "x" * 70000})
    assert not Entry.objects.exists()
