"""ledger_verify and the verify_ledger command catch rows altered in the database."""

import base64
import io

import pytest
from django.core.management import CommandError, call_command

from ledger import integrity, merkle, services
from ledger.canonical import canonical_json
from ledger.models import Checkpoint, Entry, TreeNode, TreeState

pytestmark = pytest.mark.django_db


@pytest.fixture
def sealed_log():
    for batch in range(3):
        for i in range(10):
            services.entry_append(kind="consent.granted", payload={"participant": f"p-{batch}-{i}"})
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
    assert report.nodes == TreeNode.objects.count() == 2 * 30 - bin(30).count("1")
    assert report.first_bad_index is None
    progress = io.StringIO()
    assert "ledger intact: 30 entries, 56 tree nodes, 3 checkpoints" in run_command(progress)
    assert progress.getvalue() == "verified 30/30 entries\n"


def test_empty_log_verifies():
    assert services.ledger_verify().ok
    assert "ledger intact: 0 entries" in run_command()


def test_altered_payload_is_named_by_index(sealed_log):
    Entry.objects.filter(index=17).update(
        payload=b'{"kind":"consent.granted","participant":"someone-else"}'
    )
    report = services.ledger_verify()
    assert report.first_bad_index == 17
    assert report.problems[0] == "entry 17: leaf hash mismatch"
    with pytest.raises(CommandError, match="entry 17: leaf hash mismatch") as failure:
        run_command()
    assert failure.value.returncode != 0


def test_payload_rewritten_with_its_leaf_hash_still_breaks_the_signed_roots(sealed_log):
    forged = canonical_json({"kind": "consent.granted", "participant": "forged"})
    Entry.objects.filter(index=4).update(payload=forged, leaf_hash=merkle.leaf_hash(forged))
    report = services.ledger_verify()
    assert not report.ok
    assert "tree node (level 0, index 4): hash mismatch" in report.problems
    assert "checkpoint 10: root hash does not match the entries" in report.problems


def test_command_names_the_lowest_bad_entry_before_other_problems(sealed_log):
    Checkpoint.objects.filter(size=10).update(root_hash=b"\x00" * 32)
    Entry.objects.filter(index=23).update(payload=b'{"kind":"consent.granted"}')
    with pytest.raises(CommandError, match="NOT intact: entry 23: leaf hash mismatch"):
        run_command()


def test_relabelled_kind_is_caught(sealed_log):
    Entry.objects.filter(index=8).update(kind="consent.revoked")
    report = services.ledger_verify()
    assert report.first_bad_index == 8 and "entry 8: kind" in report.problems[0]


def test_deleted_entry_is_caught(sealed_log):
    Entry.objects.filter(index=12).delete()
    report = services.ledger_verify()
    assert report.first_bad_index == 12 and report.problems == ["entry 12: missing"]


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


def test_altered_tree_node_and_head_are_caught(sealed_log):
    TreeNode.objects.filter(level=2, index=3).update(hash=b"\x01" * 32)
    TreeState.objects.update(root_hash=b"\x02" * 32)
    assert services.ledger_verify().problems == [
        "tree node (level 2, index 3): hash mismatch",
        "tree state: root does not match the 30 entries",
    ]


def test_missing_tree_node_is_caught(sealed_log):
    TreeNode.objects.filter(level=0, index=29).delete()
    assert services.ledger_verify().problems == ["tree node (level 0, index 29): missing"]


def test_head_out_of_step_with_its_checkpoint_is_caught(sealed_log):
    TreeState.objects.update(size=20)
    problems = services.ledger_verify().problems
    assert problems[0] == "tree state: size 20, but the latest checkpoint is for 30"


def test_sealing_during_verification_is_not_a_problem(sealed_log):
    def seal_more(done, total):
        if done == 8:  # mid-stream, as a live sequencer would
            for i in range(5):
                services.entry_append(kind="consent.check", payload={"participant": f"q-{i}"})
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
    Entry.objects.filter(index=13).update(payload=b'{"kind":"consent.granted","x":1}')
    TreeNode.objects.filter(level=1, index=12).update(hash=b"\x03" * 32)
    Checkpoint.objects.filter(size=20).update(root_hash=b"\x00" * 32)
    report = services.ledger_verify(chunk_size=chunk_size)
    assert report.first_bad_index == 13
    assert sorted(report.problems) == sorted(services.ledger_verify().problems)
    assert {
        "entry 13: leaf hash mismatch",
        "tree node (level 0, index 13): hash mismatch",
        "tree node (level 1, index 12): hash mismatch",
        "checkpoint 20: root hash does not match the entries",
        "checkpoint 30: root hash does not match the entries",
        "tree state: root does not match the 30 entries",
    } <= set(report.problems)
    assert report.nodes == 56 and report.checkpoints == 3 and report.entries == 30


def test_a_payload_jsonb_would_refuse_is_still_checked(sealed_log):
    # NaN and \u0000 are JSON to Python, not to jsonb: kinds are read by Python alone,
    # so the odd payload passes and a relabelled row next to it is still caught.
    odd = b'{"kind":"consent.granted","x":NaN,"y":"\\u0000"}'
    Entry.objects.filter(index=5).update(payload=odd, leaf_hash=merkle.leaf_hash(odd))
    Entry.objects.filter(index=6).update(kind="consent.revoked")
    report = services.ledger_verify(chunk_size=10)
    assert "entry 6: kind 'consent.revoked' does not match the payload" in report.problems
    assert not any(p.startswith("entry 5: kind") for p in report.problems)
    assert "tree node (level 0, index 5): hash mismatch" in report.problems
    assert report.first_bad_index == 6


@pytest.mark.parametrize(
    "payload",
    [
        b'{"kind":"consent.revoked"}',
        b'{"kind":"consent.revoked","kind":"consent.granted","a":{"kind":"x"}}',
        b'{"a":{"kind":"consent.granted"}}',
        b'["consent.granted"]',
        b'{"kind":["consent.granted"]}',
        b"not json",
        b"\xff\xfe",
    ],
)
def test_kind_is_read_from_the_top_level_exactly_as_python_reads_it(sealed_log, payload):
    Entry.objects.filter(index=3).update(payload=payload, leaf_hash=merkle.leaf_hash(payload))
    expected = integrity.kind_ok(payload, "consent.granted")
    problems = services.ledger_verify().problems
    assert ("entry 3: kind 'consent.granted' does not match the payload" not in problems) == expected


def test_a_gap_inside_a_page_is_named(sealed_log):
    Entry.objects.filter(index=14).delete()
    report = services.ledger_verify(chunk_size=10)
    assert report.problems == ["entry 14: missing"] and report.entries == 14
