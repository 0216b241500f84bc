"""ledger.integrity: verification by worker processes reports what one process reports,
for entries, leaf hashes and stored subtrees, inside spans and where spans join."""

import io
import os
import time

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from ledger import integrity, merkle, services
from ledger.canonical import canonical_json
from ledger.models import Checkpoint, Entry, TreeState
from tests.ledger import tamper

def canonical(kind: str, **payload) -> bytes:
    return canonical_json({**payload, "kind": kind})


# -- verification by worker processes (PostgreSQL: they read committed rows) --


@pytest.fixture
def committed_log(transactional_db, monkeypatch):
    """30 sealed entries, checkpoints at 10, 20 and 30, committed; spans of 4 leaves, so
    that workers join spans: [0, 4) ... [12, 16), [16, 20), [20, 24), [24, 28), [28, 30)."""
    if connection.vendor != "postgresql":
        pytest.skip("worker processes read committed rows of a PostgreSQL database")
    monkeypatch.setattr(integrity, "MIN_SPAN", 4)
    monkeypatch.setattr(integrity, "MAX_SPAN", 4)
    # Rows made directly: here on_commit would seal each one at once.
    Entry.objects.bulk_create(
        Entry(payload=canonical("consent.granted", participant=f"p-{i}")) for i in range(30)
    )
    assert services.ledger_seal_pending(max_batch=10) == 30
    assert list(Checkpoint.objects.order_by("size").values_list("size", flat=True)) == [10, 20, 30]
    return 30


@pytest.fixture(params=[64, 512], ids=["joined-by-parent", "inside-spans"])
def tiled_log(request, transactional_db, monkeypatch):
    """1,000 sealed entries: 3 full leaf tiles and a partial one, and a level-1 tile of 3
    subtrees of 256 leaves. With spans of 64 the parent joins those subtrees; with spans
    of 512 the workers find two of them inside their spans."""
    if connection.vendor != "postgresql":
        pytest.skip("worker processes read committed rows of a PostgreSQL database")
    monkeypatch.setattr(integrity, "MIN_SPAN", request.param)
    monkeypatch.setattr(integrity, "MAX_SPAN", request.param)
    Entry.objects.bulk_create(Entry(payload=canonical("consent.check", seq=i)) for i in range(1000))
    assert services.ledger_seal_pending(max_batch=300) == 1000
    return 1000


def both_ways(**kwargs):
    alone = services.ledger_verify(workers=1, **kwargs)
    parallel = services.ledger_verify(workers=2, **kwargs)
    assert (alone.workers, parallel.workers) == (1, 2)
    assert sorted(parallel.problems) == sorted(alone.problems)
    assert (parallel.first_bad_index, parallel.headline) == (alone.first_bad_index, alone.headline)
    assert (parallel.entries, parallel.nodes, parallel.checkpoints) == (
        alone.entries, alone.nodes, alone.checkpoints)
    return parallel


def test_workers_verify_an_intact_log(committed_log):
    report = both_ways()
    assert report.ok and report.entries == 30 and report.checkpoints == 3
    assert report.nodes == 30  # the leaf hashes: no subtree of 256 yet
    assert integrity.spans(30, 2) == [(s, s + 4) for s in range(0, 28, 4)] + [(28, 30)]


def alter_payload(index: int) -> None:
    tamper.payload_set(index, canonical("consent.granted", x=index))


@pytest.mark.parametrize(
    ("alter", "first_bad", "expected"),
    [
        (lambda: (alter_payload(23), alter_payload(6)), 6,
         {"entry 6: leaf hash mismatch", "entry 23: leaf hash mismatch",
          "checkpoint 10: root hash does not match the entries"}),
        # A stored leaf hash, and stored leaf hashes cut off.
        (lambda: tamper.hash_set(0, 22, b"\x01" * 32), 22, {"entry 22: leaf hash mismatch"}),
        (lambda: tamper.hashes_cut(0, 26), 26,
         {f"entry {i}: leaf hash missing" for i in range(26, 30)}),
        (lambda: Checkpoint.objects.filter(size=20).update(root_hash=b"\x00" * 32), None,
         {"checkpoint 20: root hash does not match the entries"}),
        (lambda: TreeState.objects.update(root_hash=b"\x02" * 32), None,
         {"tree state: root does not match the 30 entries"}),
        # Nothing past a gap is reported, though a worker verified it.
        (lambda: (alter_payload(25), tamper.entries_cut(13)), 13, {"entry 13: missing"}),
        (lambda: tamper.entries_cut(28), 28, {"entry 28: missing"}),

    ],
)
def test_workers_report_what_one_process_reports(committed_log, alter, first_bad, expected):
    alter()
    report = both_ways()
    assert report.first_bad_index == first_bad
    assert expected <= set(report.problems)
    if first_bad is not None and report.headline.endswith(": missing"):
        assert report.problems[-1] == report.headline and report.entries == first_bad


def test_workers_name_entry_rows_deleted_and_swapped_across_spans(committed_log):
    # Rows 2 and 22 lie in different spans ([0, 4) and [20, 24)), so in different workers.
    row_at_2, row_at_22 = tamper.rows_swap(2, 22)
    Entry.objects.filter(index=13).delete()
    report = both_ways()
    assert report.problems == [
        f"entry 2: its entry row (id {row_at_22}) does not match the leaf",
        "entry 13: its entry row is missing",
        f"entry 22: its entry row (id {row_at_2}) does not match the leaf",
    ]
    assert report.first_bad_index == 2 and report.entries == 30


def test_the_lowest_bad_index_is_named_when_a_later_worker_reports_first(
    committed_log, monkeypatch
):
    alter_payload(2)
    alter_payload(27)
    verify_span = integrity.verify_span
    finished = []

    def slow_first_span(start, end, chunk_size, emit):
        if start == 0:
            time.sleep(1.0)  # the other worker meanwhile verifies the rest
        verify_span(start, end, chunk_size, emit)

    monkeypatch.setattr(integrity, "verify_span", slow_first_span)
    report = services.ledger_verify(workers=2, progress=lambda done, total: finished.append(done))
    assert report.first_bad_index == 2 and report.headline == "entry 2: leaf hash mismatch"
    assert "entry 27: leaf hash mismatch" in report.problems
    # The first span (4 leaves) was the last one done.
    assert finished[-2:] == [26, 30]


def test_progress_is_reported_by_workers(committed_log):
    calls = []
    report = services.ledger_verify(workers=2, progress=lambda done, total: calls.append((done, total)))
    assert report.ok
    assert calls[-1] == (30, 30) and len(calls) == len(integrity.spans(30, 2))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_sealing_during_parallel_verification_is_not_a_problem(committed_log):
    sealed = []

    def seal_more(done, total):
        if not sealed and done >= 8:  # mid-stream, as a live sequencer would
            sealed.append(done)
            Entry.objects.bulk_create(
                Entry(payload=canonical("consent.check", seq=i)) for i in range(5)
            )
            services.ledger_seal_pending()

    report = services.ledger_verify(workers=2, progress=seal_more)
    assert report.ok, report.problems
    assert report.entries == 30 and Entry.objects.filter(index__isnull=False).count() == 35


@pytest.mark.parametrize(
    ("alter", "first_bad", "expected"),
    [
        (lambda: tamper.hash_set(8, 1, b"\x01" * 32), None,
         {"tree node (level 8, index 1): hash mismatch"}),
        (lambda: tamper.hashes_cut(8, 1), None,
         {"tree node (level 8, index 1): missing", "tree node (level 8, index 2): missing"}),
        (lambda: tamper.hash_set(0, 300, b"\x01" * 32), 300, {"entry 300: leaf hash mismatch"}),
        # A payload rewritten with its leaf hash (in its tile and its entry row): the
        # subtree of 256 above it differs.
        (lambda: (tamper.payload_set(600, b'{"kind":"consent.check","seq":-1}'),
                  tamper.hash_set(0, 600, merkle.leaf_hash(b'{"kind":"consent.check","seq":-1}')),
                  Entry.objects.filter(index=600).update(
                      leaf_hash=merkle.leaf_hash(b'{"kind":"consent.check","seq":-1}'))),
         None, {"tree node (level 8, index 2): hash mismatch",
                "checkpoint 900: root hash does not match the entries"}),
        # A bundle that lost its entries past 700, then a whole bundle.
        (lambda: tamper.entries_cut(700), 700, {"entry 700: missing"}),
        (lambda: tamper.entries_cut(512), 512, {"entry 512: missing"}),
    ],
)
def test_workers_check_the_tiles_of_a_larger_log(tiled_log, alter, first_bad, expected):
    assert both_ways().ok
    alter()
    report = both_ways()
    assert report.first_bad_index == first_bad
    assert expected <= set(report.problems), report.problems


def test_a_bundle_with_an_extra_entry_is_reported(tiled_log):
    held = tamper.payloads(1)
    tamper.bundle_write(1, held[:10] + [b'{"kind":"consent.check","seq":"x"}'] + held[10:])
    report = both_ways()
    assert "entry bundle 1: holds 257 entries, more than 256" in report.problems
    assert report.first_bad_index == 266


def test_an_intact_larger_log_checks_every_stored_hash(tiled_log):
    report = both_ways()
    assert report.ok and report.entries == 1000 and report.checkpoints == 4
    assert report.nodes == 1000 + 3  # the leaf hashes and 3 subtrees of 256


def test_the_default_is_one_worker_per_cpu_for_a_large_log(committed_log, monkeypatch):
    assert services.ledger_verify().workers == 1  # 30 entries: not worth forking for
    monkeypatch.setattr(integrity, "PARALLEL_MIN_ENTRIES", 10)
    monkeypatch.setattr(integrity.os, "cpu_count", lambda: 3)
    report = services.ledger_verify()
    assert report.ok and report.workers == 3


def test_inside_a_transaction_verification_stays_in_this_process(committed_log):
    with transaction.atomic():
        report = services.ledger_verify(workers=2)
    assert report.ok and report.workers == 1


def test_verify_ledger_takes_a_worker_count(committed_log):
    out = io.StringIO()
    call_command("verify_ledger", "--workers", "2", stdout=out, stderr=io.StringIO())
    assert "ledger intact: 30 entries, 30 stored hashes, 3 checkpoints verified by 2 worker processes" in (
        out.getvalue())


def test_a_worker_that_fails_fails_the_verification(committed_log, monkeypatch):
    verify_span = integrity.verify_span

    def broken(start, end, chunk_size, emit):
        if start == 8:
            raise OSError("disk on fire")
        verify_span(start, end, chunk_size, emit)

    monkeypatch.setattr(integrity, "verify_span", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        services.ledger_verify(workers=2)


def test_a_worker_that_dies_fails_the_verification(committed_log, monkeypatch):
    # Its spans were never verified: that must not read as entries missing from the log.
    verify_span = integrity.verify_span

    def dying(start, end, chunk_size, emit):
        if start == 8:
            os._exit(3)
        verify_span(start, end, chunk_size, emit)

    monkeypatch.setattr(integrity, "verify_span", dying)
    with pytest.raises(RuntimeError, match="ended early"):
        services.ledger_verify(workers=2)
