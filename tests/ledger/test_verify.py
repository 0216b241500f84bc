"""ledger_verify and the verify_ledger command catch bundles, tiles and rows altered in the
database."""

import base64
import io

import pytest
from django.core.management import CommandError, call_command

from ledger import merkle, services
from ledger.canonical import canonical_json
from ledger.models import Checkpoint, Entry, TreeState
from tests.ledger import tamper

pytestmark = pytest.mark.django_db


@pytest.fixture
def sealed_log():
    for batch in range(3):
        for i in range(10):
            services.entry_append(kind="consent.granted", payload={"n": f"p-{batch}-{i}"})
        services.ledger_seal_pending()
    assert services.ledger_verify().ok
    return 30


def run_command(stderr=None) -> str:
    out = io.StringIO()
    call_command("verify_ledger", stdout=out, stderr=stderr or io.StringIO())
    return out.getvalue()


def test_intact_log_verifies(sealed_log):
    report = services.ledger_verify()
    assert report.ok and report.problems == []
    assert (report.entries, report.checkpoints, report.pending) == (30, 3, 0)
    assert report.nodes == 30  # the leaf hashes; no subtree of 256 leaves yet
    assert report.first_bad_index is None
    progress = io.StringIO()
    assert "ledger intact: 30 entries, 30 stored hashes, 3 checkpoints" in run_command(progress)
    assert progress.getvalue() == "verified 30/30 entries\n"


def test_empty_log_verifies():
    assert services.ledger_verify().ok
    assert "ledger intact: 0 entries" in run_command()


def test_altered_payload_is_named_by_index(sealed_log):
    tamper.payload_set(17, b'{"kind":"consent.granted","participant":"someone-else"}')
    report = services.ledger_verify()
    assert report.first_bad_index == 17
    assert report.problems[0] == "entry 17: leaf hash mismatch"
    with pytest.raises(CommandError, match="entry 17: leaf hash mismatch") as failure:
        run_command()
    assert failure.value.returncode != 0


def test_payload_rewritten_with_its_leaf_hash_still_breaks_the_signed_roots(sealed_log):
    forged = canonical_json({"kind": "consent.granted", "participant": "forged"})
    tamper.payload_set(4, forged)
    tamper.hash_set(0, 4, merkle.leaf_hash(forged))
    # And its entry row's, which would name entry 4 otherwise (test_entry_rows.py).
    Entry.objects.filter(index=4).update(leaf_hash=merkle.leaf_hash(forged))
    report = services.ledger_verify()
    assert not report.ok
    assert not any(p.startswith("entry") for p in report.problems)
    assert "checkpoint 10: root hash does not match the entries" in report.problems


def test_command_names_the_lowest_bad_entry_before_other_problems(sealed_log):
    Checkpoint.objects.filter(size=10).update(root_hash=b"\x00" * 32)
    tamper.payload_set(23, b'{"kind":"consent.granted"}')
    with pytest.raises(CommandError, match="NOT intact: entry 23: leaf hash mismatch"):
        run_command()


def test_entries_cut_from_a_bundle_are_a_gap(sealed_log):
    tamper.entries_cut(12)
    report = services.ledger_verify()
    assert report.first_bad_index == 12 and report.problems == ["entry 12: missing"]
    assert report.entries == 12


def test_a_deleted_entry_row_is_caught_without_asking(sealed_log):
    # Its leaf is intact (the log is), but a row records could point at is gone; more in
    # test_entry_rows.py.
    Entry.objects.filter(index=12).delete()
    with pytest.raises(CommandError, match="NOT intact: entry 12: its entry row is missing"):
        run_command()


def test_altered_checkpoint_root_is_caught(sealed_log):
    Checkpoint.objects.filter(size=20).update(root_hash=b"\x00" * 32)
    with pytest.raises(CommandError, match="checkpoint 20"):
        run_command()


def test_altered_checkpoint_signature_is_caught(sealed_log):
    checkpoint = Checkpoint.objects.get(size=10)
    body, signature = checkpoint.note.split("\n\n")
    name, encoded = signature[2:].split(" ")
    raw = bytearray(base64.b64decode(encoded))
    raw[-1] ^= 1
    Checkpoint.objects.filter(size=10).update(
        note=f"{body}\n\n\u2014 {name} {base64.b64encode(raw).decode()}\n"
    )
    assert services.ledger_verify().problems == [
        f"checkpoint 10: signature by {name!r} does not verify"
    ]
    with pytest.raises(CommandError, match="checkpoint 10: signature"):
        run_command()


def test_checkpoint_note_not_matching_its_row_is_caught(sealed_log):
    twenty = Checkpoint.objects.get(size=20).note
    Checkpoint.objects.filter(size=30).update(note=twenty)
    report = services.ledger_verify()
    assert report.problems == [
        "checkpoint 30: signed note does not match the stored origin, size or root"
    ]


def test_altered_leaf_hash_and_head_are_caught(sealed_log):
    tamper.hash_set(0, 11, b"\x01" * 32)
    TreeState.objects.update(root_hash=b"\x02" * 32)
    assert services.ledger_verify().problems == [
        "entry 11: leaf hash mismatch",
        "tree state: root does not match the 30 entries",
    ]


def test_missing_leaf_hashes_are_caught(sealed_log):
    tamper.hashes_cut(0, 29)
    assert services.ledger_verify().problems == ["entry 29: leaf hash missing"]


def test_head_out_of_step_with_its_checkpoint_is_caught(sealed_log):
    TreeState.objects.update(size=20)
    problems = services.ledger_verify().problems
    assert problems[0] == "tree state: size 20, but the latest checkpoint is for 30"


def test_sealing_during_verification_is_not_a_problem(sealed_log):
    def seal_more(done, total):
        if done == 8:  # mid-stream, as a live sequencer would
            for i in range(5):
                services.entry_append(kind="consent.check", payload={"n": f"q-{i}"})
            services.ledger_seal_pending()

    report = services.ledger_verify(progress=seal_more, chunk_size=8)
    assert report.ok, report.problems
    assert report.entries == 30 and Entry.objects.filter(index__isnull=False).count() == 35


def test_progress_is_reported_per_chunk(sealed_log):
    calls = []
    report = services.ledger_verify(
        progress=lambda done, total: calls.append((done, total)), chunk_size=8
    )
    assert report.ok
    assert calls == [(8, 30), (16, 30), (24, 30), (30, 30)]


# -- the paged, plain-cursor verification (PostgreSQL: binary psycopg rows) --


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 10, 64])
def test_pages_of_any_size_find_the_same_problems(sealed_log, chunk_size):
    tamper.payload_set(13, b'{"kind":"consent.granted","x":1}')
    tamper.hash_set(0, 12, b"\x03" * 32)
    Checkpoint.objects.filter(size=20).update(root_hash=b"\x00" * 32)
    report = services.ledger_verify(chunk_size=chunk_size)
    assert report.first_bad_index == 12
    assert sorted(report.problems) == sorted(services.ledger_verify().problems)
    assert {
        "entry 12: leaf hash mismatch",
        "entry 13: leaf hash mismatch",
        "checkpoint 20: root hash does not match the entries",
        "checkpoint 30: root hash does not match the entries",
        "tree state: root does not match the 30 entries",
    } <= set(report.problems)
    assert report.nodes == 30 and report.checkpoints == 3 and report.entries == 30


def test_a_gap_inside_a_page_is_named(sealed_log):
    tamper.entries_cut(14)
    report = services.ledger_verify(chunk_size=10)
    assert report.problems == ["entry 14: missing"] and report.entries == 14


@pytest.fixture
def tiled_log():
    """600 entries in batches of 200: two full bundles and leaf tiles, a partial third, and
    a level-1 tile holding the two subtrees of 256 leaves."""
    for batch in range(3):
        for i in range(200):
            services.entry_append(kind="consent.check", payload={"seq": batch * 1000 + i})
        services.ledger_seal_pending()
    assert services.ledger_verify().ok
    return 600


@pytest.mark.parametrize("chunk_size", [100, 256, 4096])
def test_stored_subtrees_of_256_leaves_are_checked(tiled_log, chunk_size):
    report = services.ledger_verify(chunk_size=chunk_size)
    assert report.ok and report.nodes == 600 + 2
    tamper.hash_set(8, 1, b"\x04" * 32)
    assert services.ledger_verify(chunk_size=chunk_size).problems == [
        "tree node (level 8, index 1): hash mismatch"]
    tamper.hashes_cut(8, 0)
    assert services.ledger_verify(chunk_size=chunk_size).problems == [
        "tree node (level 8, index 0): missing", "tree node (level 8, index 1): missing"]


def test_a_payload_holding_a_newline_breaks_its_bundle(tiled_log):
    # Two payloads where the bundle said one: every entry after it in the bundle moves.
    tamper.payload_set(300, b'{"kind":"consent.check",\n"seq":1}')
    report = services.ledger_verify()
    assert report.first_bad_index == 300
    assert "entry bundle 1: holds 257 entries, more than 256" in report.problems
