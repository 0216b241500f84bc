"""ledger.integrity: the bulk kind check is never fooled, the bulk reads prove only what
is there, and verification by worker processes reports what one process reports."""

import io
import os
import random
import time

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from ledger import integrity, merkle, services
from ledger.canonical import canonical_json
from ledger.models import Checkpoint, Entry, TreeNode, TreeState

# -- the kind check over a whole page --

KINDS = ["consent.granted", "consent.check", "participant.enrolled", "withdrawal.confirmed"]


def canonical(kind: str, **payload) -> bytes:
    return canonical_json({**payload, "kind": kind})


def portal_like(i: int) -> tuple[bytes, str]:
    """Payloads shaped like the portal's: strings, integers, null, arrays, an object."""
    kind = KINDS[i % len(KINDS)]
    return canonical(
        kind, type=kind, participant=f"pid-{i:08d}", custodian=i % 7, sample=None,
        reasons=["ok", "irb"][: i % 3], at="2024-05-01T12:00:00.123456+00:00",
        credential=f"urn:uuid:3f2e1c9a-1111-2222-3333-{i:012d}", flags={"a": True, "b": [1, -2]},
        note="café ünïcode ✓" if i % 5 == 0 else "plain",
    ), kind


def test_canonical_payloads_are_proved_in_bulk():
    rows = [portal_like(i) for i in range(200)]
    payloads, kinds = [p for p, _ in rows], [k for _, k in rows]
    assert all(integrity.kind_ok(p, k) for p, k in rows)
    assert integrity.kinds_match(payloads, kinds)


@pytest.mark.parametrize(
    ("payloads", "kinds"),
    [
        # A nested or duplicated "kind", a kind inside a string: json.loads decides.
        ([b'{"a":{"kind":"x"},"kind":"x"}'], ["x"]),
        ([b'{"a":{"kind":"x"}}'], ["x"]),
        ([b'{"kind":"y","kind":"x"}'], ["x"]),
        ([b'{"a":"\\"kind\\":\\"x\\"","kind":"y"}'], ["x"]),
        ([b'{"kind":"x"}junk'], ["x"]),
        ([b'{"kind": "x"}'], ["y"]),
        ([b'{"kind":"x","n":NaN}'], ["y"]),
        ([b'{"kind":"x","n":1' + b"0" * 5000 + b"}"], ["x"]),
        ([b'{"kind":"x","s":"\x01"}'], ["x"]),
        ([b'{"kind":"x","s":"\xff"}'], ["x"]),
        ([b'{"kind":"x","s":"a\nb"}'], ["x"]),
        ([b'{"kind":"x"}'], ['x"']),
        ([b""], [""]),
        # Rows that only line up wrongly: the first payload is cut, a kind carries the
        # rest of it, the second payload is the tail. Each row alone is not JSON.
        ([b'{"kind":"Q","a":"x', b'{":1}'], [",", "Q"]),
        ([b'{"kind":"Q","a":"x', b'{":1}'], ["}", "Q"]),
    ],
)
def test_the_bulk_check_never_proves_what_json_loads_would_refuse(payloads, kinds):
    expected = all(integrity.kind_ok(p, k) for p, k in zip(payloads, kinds, strict=True))
    if integrity.kinds_match(payloads, kinds):
        assert expected


def test_the_bulk_check_against_mutated_payloads():
    """Random edits of real payloads, and kinds that may not fit: the bulk check is
    accepted only where json.loads agrees with every row."""
    rng = random.Random(9162)
    pieces = [b"{", b"}", b"[", b"]", b'"', b":", b",", b"\\", b" ", b"\n", b"\x00", b"kind",
              b'"kind":"consent.check"', b'"kind":', b"0", b"-1", b"1e5", b"true", b"null",
              b"\xc3\xa9", b"\xff", b'{"kind":"x"}', b'"a":{"kind":"y"}']
    odd_kinds = ["", "x", "y", "Q", ",", "}", '"', "consent.granted,", "Consent.check"]
    accepted = 0
    for _ in range(4000):
        rows = [portal_like(rng.randrange(1000)) for _ in range(rng.randrange(1, 4))]
        payloads, kinds = [], []
        for payload, kind in rows:
            if rng.random() < 0.6:
                for _ in range(rng.randrange(1, 3)):
                    at = rng.randrange(len(payload) + 1)
                    cut = rng.choice([0, 0, 1, 2])
                    payload = payload[:at] + rng.choice(pieces) + payload[at + cut:]
            if rng.random() < 0.2:
                kind = rng.choice(odd_kinds + KINDS)
            payloads.append(payload)
            kinds.append(kind)
        if integrity.kinds_match(payloads, kinds):
            accepted += 1
            assert all(integrity.kind_ok(p, k) for p, k in zip(payloads, kinds, strict=True)), (
                payloads, kinds)
    assert accepted > 500  # the check did accept some pages, and was right each time


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
        Entry(kind="consent.granted", payload=canonical("consent.granted", participant=f"p-{i}"))
        for i in range(30)
    )
    assert services.ledger_seal_pending(max_batch=10) == 30
    assert list(Checkpoint.objects.order_by("size").values_list("size", flat=True)) == [10, 20, 30]
    return 30


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
    assert report.nodes == TreeNode.objects.count() == 2 * 30 - bin(30).count("1")
    assert integrity.spans(30, 2) == [(s, s + 4) for s in range(0, 28, 4)] + [(28, 30)]


def alter_payload(index: int) -> None:
    Entry.objects.filter(index=index).update(payload=canonical("consent.granted", x=index))


@pytest.mark.parametrize(
    ("alter", "first_bad", "expected"),
    [
        (lambda: (alter_payload(23), alter_payload(6)), 6,
         {"entry 6: leaf hash mismatch", "entry 23: leaf hash mismatch",
          "checkpoint 10: root hash does not match the entries"}),
        (lambda: Entry.objects.filter(index=22).update(kind="consent.revoked"), 22,
         {"entry 22: kind 'consent.revoked' does not match the payload"}),
        # A node inside a span, and nodes that join spans (checked by the parent).
        (lambda: TreeNode.objects.filter(level=1, index=5).update(hash=b"\x01" * 32), None,
         {"tree node (level 1, index 5): hash mismatch"}),
        (lambda: TreeNode.objects.filter(level=3, index=1).update(hash=b"\x01" * 32), None,
         {"tree node (level 3, index 1): hash mismatch"}),
        (lambda: TreeNode.objects.filter(level=4, index=0).delete(), None,
         {"tree node (level 4, index 0): missing"}),
        (lambda: Checkpoint.objects.filter(size=20).update(root_hash=b"\x00" * 32), None,
         {"checkpoint 20: root hash does not match the entries"}),
        (lambda: TreeState.objects.update(root_hash=b"\x02" * 32), None,
         {"tree state: root does not match the 30 entries"}),
        # Nothing past a gap is reported, though a worker verified it.
        (lambda: (Entry.objects.filter(index=13).delete(), alter_payload(25)), 13,
         {"entry 13: missing"}),
        (lambda: Entry.objects.filter(index__gte=28).delete(), 28, {"entry 28: missing"}),
    ],
)
def test_workers_report_what_one_process_reports(committed_log, alter, first_bad, expected):
    alter()
    report = both_ways()
    assert report.first_bad_index == first_bad
    assert expected <= set(report.problems)
    if first_bad is not None and "missing" in report.headline:
        assert report.problems[-1] == report.headline and report.entries == first_bad


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
                Entry(kind="consent.check", payload=canonical("consent.check", seq=i)) for i in range(5)
            )
            services.ledger_seal_pending()

    report = services.ledger_verify(workers=2, progress=seal_more)
    assert report.ok, report.problems
    assert report.entries == 30 and Entry.objects.filter(index__isnull=False).count() == 35


def test_rows_out_of_physical_order_are_read_in_index_order(committed_log, monkeypatch):
    # Rewriting a row moves it: the physical-order reads no longer prove the pages, the
    # index-order reads do, and nothing is reported.
    Entry.objects.filter(index__in=[1, 17]).update(kind="consent.granted")
    TreeNode.objects.filter(level=0, index=5).update(hash=merkle.leaf_hash(
        canonical("consent.granted", participant="p-5")))
    report = both_ways()
    assert report.ok, report.problems
    reads, proved = [], []
    entries_sql, physically = integrity._entries_sql, integrity._nodes_proved_physically
    monkeypatch.setattr(integrity, "_entries_sql", lambda physical: reads.append(physical) or
                        entries_sql(physical))
    monkeypatch.setattr(integrity, "_nodes_proved_physically", lambda *args: proved.append(
        physically(*args)) or proved[-1])
    monkeypatch.setattr(integrity, "_page_rows", None)  # never needed here
    assert services.ledger_verify(workers=1, chunk_size=4).ok
    # Pages [0, 4) and [16, 20) were read twice, the rest once; [4, 8) lost its node proof.
    assert reads == [True, False] + [True] * 3 + [True, False] + [True] * 3
    assert proved == [True, False] + [True] * 6


def test_leaf_hashes_of_other_lengths_cannot_pass_as_a_page(committed_log):
    # Two stored leaf hashes cut at another place join to the same bytes.
    first, second = (
        merkle.leaf_hash(canonical("consent.granted", participant=f"p-{i}")) for i in (8, 9)
    )
    Entry.objects.filter(index=8).update(leaf_hash=first[:31])
    Entry.objects.filter(index=9).update(leaf_hash=first[31:] + second)
    TreeNode.objects.filter(level=0, index=8).update(hash=first[:31])
    TreeNode.objects.filter(level=0, index=9).update(hash=first[31:] + second)
    report = both_ways()
    assert report.first_bad_index == 8
    assert {"entry 8: leaf hash mismatch", "entry 9: leaf hash mismatch",
            "tree node (level 0, index 8): hash mismatch",
            "tree node (level 0, index 9): hash mismatch"} <= set(report.problems)


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
    assert "ledger intact: 30 entries, 56 tree nodes, 3 checkpoints verified by 2 worker processes" in (
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
