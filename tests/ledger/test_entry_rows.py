"""The entry rows the portal's records point at (Entry: id, index, leaf_hash) are bound to
their leaves: verify_ledger names a row deleted, moved or altered, by default, and a
receipt, remembered or not, is never served for a row that no longer holds its leaf."""

import base64
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.utils import timezone

from consent_portal import services as portal_services
from consent_portal.models import ConsentCheck
from ledger import integrity, merkle, selectors, services, tiles
from ledger.canonical import canonical_json
from ledger.models import Entry
from tests.ledger import tamper

SIZE = 30


@pytest.fixture
def sealed_log(db):
    """30 entries sealed in three batches of 10."""
    for batch in range(3):
        for i in range(10):
            services.entry_append(kind="consent.granted", payload={"n": f"p-{batch}-{i}"})
        services.ledger_seal_pending()
    assert services.ledger_verify().ok
    return SIZE


def problems_of_command(*args: str) -> tuple[str, str]:
    """(the failure's message, what went to stderr) of verify_ledger, which must fail."""
    err = io.StringIO()
    with pytest.raises(CommandError) as failure:
        call_command("verify_ledger", *args, stdout=io.StringIO(), stderr=err)
    return str(failure.value), err.getvalue()


# -- sealing binds each row to its leaf --


def test_sealing_stores_each_rows_leaf_hash(sealed_log):
    rows = Entry.objects.order_by("index").values_list("index", "leaf_hash")
    assert [index for index, _ in rows] == list(range(SIZE))
    assert [bytes(digest) for _, digest in rows] == [
        merkle.leaf_hash(tamper.payload_of(i)) for i in range(SIZE)]
    pending = services.entry_append(kind="consent.granted", payload={"n": "later"})
    assert Entry.objects.values_list("leaf_hash", flat=True).get(id=pending.id) is None


def test_sealing_in_chunks_gives_every_row_its_own_leaf_hash(db):
    # More rows than one statement of the SQLite path (300) takes.
    Entry.objects.bulk_create(
        Entry(payload=canonical_json({"kind": "consent.check", "seq": i})) for i in range(700))
    assert services.ledger_seal_pending(max_batch=700) == 700
    rows = dict(Entry.objects.values_list("index", "leaf_hash"))
    assert {index: bytes(digest) for index, digest in rows.items()} == {
        i: merkle.leaf_hash(canonical_json({"kind": "consent.check", "seq": i})) for i in range(700)}
    assert services.ledger_verify().ok


# -- verify_ledger, by default --


def test_a_deleted_entry_row_is_named_by_its_index(sealed_log):
    # Its leaf is intact (the log is), but the row records could point at is gone.
    Entry.objects.filter(index=12).delete()
    report = services.ledger_verify()
    assert report.problems == ["entry 12: its entry row is missing"]
    assert report.first_bad_index == 12 and report.headline == "entry 12: its entry row is missing"
    assert report.entries == SIZE  # the log itself is verified to its end
    message, _ = problems_of_command()
    assert message == "ledger is NOT intact: entry 12: its entry row is missing"
    # The old flag is still taken, and changes nothing.
    assert problems_of_command("--entry-rows")[0] == message


def test_rows_whose_indexes_were_swapped_are_both_named(sealed_log):
    row_at_5, row_at_17 = tamper.rows_swap(5, 17)
    expected = [f"entry 5: its entry row (id {row_at_17}) does not match the leaf",
                f"entry 17: its entry row (id {row_at_5}) does not match the leaf"]
    report = services.ledger_verify()
    assert report.problems == expected and report.first_bad_index == 5
    # The same when the two rows lie in different pages.
    assert services.ledger_verify(chunk_size=8).problems == expected
    message, err = problems_of_command()
    assert message == f"ledger is NOT intact: {expected[0]}"
    assert err.splitlines()[-2:] == expected
    tamper.rows_swap(5, 17)  # put back
    assert services.ledger_verify().ok


def test_an_altered_leaf_hash_is_named(sealed_log):
    entry_id = Entry.objects.values_list("id", flat=True).get(index=9)
    Entry.objects.filter(id=entry_id).update(leaf_hash=merkle.leaf_hash(b"something else"))
    assert services.ledger_verify().problems == [
        f"entry 9: its entry row (id {entry_id}) does not match the leaf"]


def test_leaf_hashes_shifted_between_rows_are_named(sealed_log):
    # Joined, the rows' hashes are the leaves' still: each row is compared on its own.
    ids = [Entry.objects.values_list("id", flat=True).get(index=i) for i in (5, 6)]
    hashes = [bytes(Entry.objects.values_list("leaf_hash", flat=True).get(id=i)) for i in ids]
    Entry.objects.filter(id=ids[0]).update(leaf_hash=hashes[0] + hashes[1])
    Entry.objects.filter(id=ids[1]).update(leaf_hash=b"")
    assert services.ledger_verify().problems == [
        f"entry {index}: its entry row (id {entry_id}) does not match the leaf"
        for index, entry_id in zip((5, 6), ids, strict=True)]


def test_a_row_without_its_leaf_hash_is_named(sealed_log):
    entry_id = tamper.row_leaf_hash_clear(21)
    report = services.ledger_verify(chunk_size=8)
    assert report.problems == [f"entry 21: its entry row (id {entry_id}) has no leaf hash"]
    assert report.first_bad_index == 21


def test_a_row_moved_past_the_head_leaves_its_index_missing(sealed_log):
    Entry.objects.filter(index=3).update(index=tamper.ASIDE)
    assert services.ledger_verify().problems == ["entry 3: its entry row is missing"]


def test_an_altered_payload_is_named_once_not_again_by_its_row(sealed_log):
    # The row still holds the leaf hash the log stored: the leaf is what was altered.
    tamper.payload_set(17, b'{"kind":"consent.granted","participant":"someone-else"}')
    report = services.ledger_verify()
    assert report.headline == "entry 17: leaf hash mismatch"
    assert not [p for p in report.problems if "entry row" in p]


def test_an_altered_stored_leaf_hash_is_named_once_not_again_by_its_row(sealed_log):
    # The row still matches the payload: the stored hash is what was altered.
    tamper.hash_set(0, 17, b"\x01" * 32)
    assert services.ledger_verify().problems == ["entry 17: leaf hash mismatch"]


def test_rows_are_checked_up_to_a_gap_and_not_past_it(sealed_log):
    Entry.objects.filter(index=25).delete()
    Entry.objects.filter(index=8).delete()
    tamper.entries_cut(12)
    report = services.ledger_verify(chunk_size=4)
    assert report.problems == ["entry 8: its entry row is missing", "entry 12: missing"]


def test_the_rows_are_read_one_range_a_page(sealed_log, monkeypatch):
    fetch, reads = integrity._fetch, []

    def counted(sql, params):
        reads.append((sql, params))
        return fetch(sql, params)

    monkeypatch.setattr(integrity, "_fetch", counted)
    assert services.ledger_verify(chunk_size=8).ok
    table = connection.ops.quote_name(Entry._meta.db_table)
    assert [params for sql, params in reads if f"FROM {table} " in sql] == [
        [0, 8], [8, 16], [16, 24], [24, 30]]
    # Besides each page's bundles and tiles: nothing else is read row by row.
    assert len(reads) == 3 * 4


# -- receipts --


def receipt_of(index: int) -> dict:
    return selectors.entry_receipt(entry_id=Entry.objects.values_list("id", flat=True).get(index=index))


def test_a_receipt_is_refused_for_a_row_moved_to_another_leaf(sealed_log):
    row_at_5, row_at_17 = tamper.rows_swap(5, 17)
    for entry_id in (row_at_5, row_at_17):
        with pytest.raises(selectors.EntryRowMismatch):
            selectors.entry_receipt(entry_id=entry_id)
        with pytest.raises(selectors.EntryRowMismatch):
            selectors.entry_bytes(entry_id=entry_id)
        with pytest.raises(selectors.EntryRowMismatch):
            selectors.entry_evidence(entry_id=entry_id)


def test_a_remembered_receipt_is_not_served_once_its_row_moves(sealed_log):
    row_at_5 = Entry.objects.values_list("id", flat=True).get(index=5)
    before = selectors.entry_receipt(entry_id=row_at_5)
    assert before["index"] == 5 and row_at_5 in selectors._final_receipts
    tamper.rows_swap(5, 17)
    with pytest.raises(selectors.EntryRowMismatch):
        selectors.entry_receipt(entry_id=row_at_5)
    tamper.rows_swap(5, 17)  # the repair
    assert selectors.entry_receipt(entry_id=row_at_5) == before


def test_a_receipt_remembered_while_rows_were_swapped_is_not_served_after_the_repair(sealed_log):
    # Rows swapped with their leaf hashes match the leaves they hold: the receipt built then
    # is the other row's, and the process remembers it. The repair must end that.
    right = {index: receipt_of(index) for index in (5, 17)}
    selectors._final_receipts.clear()
    row_at_5, row_at_17 = tamper.rows_swap(5, 17, leaf_hashes=True)
    assert selectors.entry_receipt(entry_id=row_at_5)["index"] == 17
    assert selectors.entry_receipt(entry_id=row_at_17)["index"] == 5
    tamper.rows_swap(5, 17, leaf_hashes=True)  # the repair
    assert selectors.entry_receipt(entry_id=row_at_5) == right[5]
    assert selectors.entry_receipt(entry_id=row_at_17) == right[17]


def test_a_remembered_receipt_costs_one_query_and_a_deleted_row_none(
        sealed_log, django_assert_num_queries):
    entry_id = Entry.objects.values_list("id", flat=True).get(index=4)
    receipt = selectors.entry_receipt(entry_id=entry_id)
    with django_assert_num_queries(1):  # the row and the witnesses, together
        assert selectors.entry_receipt(entry_id=entry_id) == receipt
    Entry.objects.filter(id=entry_id).delete()
    with pytest.raises(Entry.DoesNotExist):
        selectors.entry_receipt(entry_id=entry_id)
    assert entry_id not in selectors._final_receipts


# -- through the consent check API --


@pytest.fixture
def two_checks(custodian_and_token, participant, approved_study, django_capture_on_commit_callbacks):
    """Two sealed consent checks of a custodian: (API client, [check ids])."""
    custodian, token = custodian_and_token
    portal_services.sample_register(custodian=custodian, identifier="S-1", participant=participant,
                                    kind="blood")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}", raise_request_exception=False)
    ids = []
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            answer = api.post("/api/v1/consent-checks", content_type="application/json", data=json.dumps(
                {"sample": "S-1", "study": "hmb-study", "purpose": "DUO:0000006"}))
        assert answer.status_code == 200 and answer.json()["decision"] == "deny", answer.content
        ids.append(answer.json()["check"])
    return api, ids


def check_ledger(api, check_id) -> dict | int:
    """A check's receipt as the API serves it, or the status code of a failure."""
    answer = api.get(f"/api/v1/consent-checks/{check_id}")
    return answer.json()["ledger"] if answer.status_code == 200 else answer.status_code


def test_the_api_never_serves_a_check_the_receipt_of_another(two_checks):
    api, (x, y) = two_checks
    entries = {str(pk): index for pk, index in
               ConsentCheck.objects.filter(pk__in=[x, y]).values_list("pk", "ledger_entry__index")}
    ix, iy = entries[x], entries[y]
    right = {check_id: check_ledger(api, check_id) for check_id in (x, y)}  # remembered
    assert (right[x]["index"], right[y]["index"]) == (ix, iy)
    opened = json.loads(base64.b64decode(right[x]["leaf"]))
    assert opened["kind"] == "consent.check"
    assert right[x]["openings"]["check"]["value"] == x
    # Indexes swapped: no receipt rather than the other check's.
    tamper.rows_swap(ix, iy)
    assert check_ledger(api, x) == 500 and check_ledger(api, y) == 500
    tamper.rows_swap(ix, iy)  # the repair
    assert check_ledger(api, x) == right[x] and check_ledger(api, y) == right[y]
    # Swapped with their leaf hashes, the rows match the leaves they hold and the other
    # check's receipt is built (its openings then fail `python -m ledger.verify`); once
    # repaired, each check gets its own again, not the one remembered meanwhile.
    tamper.rows_swap(ix, iy, leaf_hashes=True)
    assert check_ledger(api, x)["index"] == iy
    tamper.rows_swap(ix, iy, leaf_hashes=True)
    assert check_ledger(api, x) == right[x] and check_ledger(api, y) == right[y]


# -- the migration that fills the rows sealed before --

BEFORE, AFTER = [("ledger", "0004_entry_openings")], [("ledger", "0005_entry_leaf_hash")]


def migrate(target):
    executor = MigrationExecutor(connection)
    executor.migrate(target)
    return executor.loader.project_state(target).apps


@pytest.fixture
def at_0004(transactional_db):
    apps = migrate(BEFORE)
    try:
        yield apps
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


def log_at_0004(apps, size: int) -> list[bytes]:
    """A sealed log of size entries (and one pending) as the sequencer of 0004 stored it:
    its rows without leaf hashes; returns the payloads."""
    Entry, EntryBundle, HashTile = (apps.get_model("ledger", name)
                                    for name in ("Entry", "EntryBundle", "HashTile"))
    now = timezone.now()
    payloads = [canonical_json({"kind": "consent.check", "seq": i}) for i in range(size)]
    tree = merkle.CompactRange()
    runs = tree.extend([merkle.leaf_hash(p) for p in payloads])
    for number, data in tiles.extend_bundles(0, payloads, None).items():
        EntryBundle.objects.create(index=number, data=data)
    for (level, number), data in tiles.extend_tiles(0, runs, {}).items():
        HashTile.objects.create(level=level, index=number, hashes=data)
    Entry.objects.bulk_create(Entry(index=i, sealed_at=now) for i in range(size))
    Entry.objects.create(payload=canonical_json({"kind": "consent.check", "late": 1}))
    return payloads


def test_the_migration_fills_the_rows_sealed_before_from_their_bundles(at_0004):
    payloads = log_at_0004(at_0004, 600)
    # An entry its bundle lost (a log damaged before): its row takes the stored leaf hash.
    tamper_bundle = at_0004.get_model("ledger", "EntryBundle").objects.get(index=2)
    held = tiles.split_bundle(bytes(tamper_bundle.data))
    tamper_bundle.data = tiles.SEPARATOR.join(held[:50])
    tamper_bundle.save()
    after = migrate(AFTER)
    Entry = after.get_model("ledger", "Entry")
    rows = dict(Entry.objects.filter(index__isnull=False).values_list("index", "leaf_hash"))
    assert {index: bytes(digest) for index, digest in rows.items()} == {
        i: merkle.leaf_hash(p) for i, p in enumerate(payloads)}
    assert Entry.objects.filter(index__isnull=True, leaf_hash__isnull=True).count() == 1
    # The loss is still the finding, and nothing about the rows.
    TreeState = after.get_model("ledger", "TreeState")
    TreeState.objects.create(id=1, size=600, root_hash=merkle.CompactRange().root())
    report = services.ledger_verify()
    assert report.first_bad_index == 562 and "entry 562: missing" in report.problems
    assert not [p for p in report.problems if "entry row" in p]


def test_the_migration_refuses_a_sealed_row_the_log_does_not_hold(at_0004):
    log_at_0004(at_0004, 300)
    at_0004.get_model("ledger", "Entry").objects.filter(index=299).update(index=700)
    with pytest.raises(RuntimeError, match="sealed entry 700 is in neither its bundle nor its hash tile"):
        migrate(AFTER)
    assert "leaf_hash" not in [c.name for c in connection.introspection.get_table_description(
        connection.cursor(), "ledger_entry")]
    for name in ("Entry", "EntryBundle", "HashTile"):  # so the fixture can migrate on
        at_0004.get_model("ledger", name).objects.all().delete()
