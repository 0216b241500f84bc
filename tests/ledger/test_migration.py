"""Migration ledger 0003: a log stored one row per entry and per subtree moves into bundles
and hash tiles with its bytes unchanged (an alteration made before stays visible), and
moves back."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from ledger import merkle, note, selectors, services, tiles
from ledger.canonical import canonical_json
from ledger.keys import ledger_key_get_or_create, log_private_key
from ledger.models import Checkpoint, EntryBundle, HashTile

BEFORE, AFTER = [("ledger", "0002_consortium")], [("ledger", "0003_tiles")]
SIZE = 600


def migrate(target):
    executor = MigrationExecutor(connection)
    executor.migrate(target)
    return executor.loader.project_state(target).apps


def migrate_on():
    """To the latest migrations, which the code verifying and sealing expects."""
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


def old_log(apps, altered: int | None = None):
    """SIZE sealed entries and two pending ones, in the layout of 0002, and every complete
    subtree, as the sequencer of that release stored them; entry `altered` rewritten
    afterwards."""
    Entry, TreeNode, TreeState = (apps.get_model("ledger", name) for name in ("Entry", "TreeNode", "TreeState"))
    now = timezone.now()
    tree, nodes, payloads = merkle.CompactRange(), [], []
    for i in range(SIZE):
        payload = canonical_json({"kind": "consent.check", "seq": i})
        leaf = merkle.leaf_hash(payload)
        Entry.objects.create(index=i, kind="consent.check", payload=payload, leaf_hash=leaf, sealed_at=now)
        nodes += tree.append(leaf)
        payloads.append(payload)
    for i in range(2):
        Entry.objects.create(kind="consent.check", payload=canonical_json({"kind": "consent.check", "late": i}))
    TreeNode.objects.bulk_create(TreeNode(level=lv, index=i, hash=h) for lv, i, h in nodes)
    TreeState.objects.create(id=1, size=SIZE, root_hash=tree.root())
    key = ledger_key_get_or_create()
    body = note.checkpoint_body(note.parse_verifier_key(services.ledger_verifier_key()).name, SIZE, tree.root())
    Checkpoint.objects.create(size=SIZE, root_hash=tree.root(), note=note.sign_note(body, key.name, log_private_key(key)))
    if altered is not None:
        Entry.objects.filter(index=altered).update(payload=b'{"kind":"consent.check","seq":-1}')
    return payloads, {(lv, i): h for lv, i, h in nodes}


@pytest.fixture
def at_0002(transactional_db):
    apps = migrate(BEFORE)
    try:
        yield apps
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


def test_a_sealed_log_moves_into_bundles_and_tiles_and_back(at_0002):
    payloads, nodes = old_log(at_0002)
    migrate(AFTER)
    assert [tiles.split_bundle(bytes(b.data)) for b in EntryBundle.objects.order_by("index")] == [
        payloads[:256], payloads[256:512], payloads[512:]]
    stored = {(t.level, t.index): bytes(t.hashes) for t in HashTile.objects.all()}
    assert stored == {
        (0, 0): b"".join(nodes[(0, i)] for i in range(256)),
        (0, 1): b"".join(nodes[(0, i)] for i in range(256, 512)),
        (0, 2): b"".join(nodes[(0, i)] for i in range(512, 600)),
        (1, 0): nodes[(8, 0)] + nodes[(8, 1)],
    }
    assert selectors.subtree_hashes(pairs=list(nodes)) == nodes
    migrate_on()
    report = services.ledger_verify()
    assert report.ok, report.problems
    assert (report.entries, report.pending) == (SIZE, 2)
    # The pending entries stay pending, and seal on top of the moved log.
    assert services.ledger_seal_pending() == 2
    assert services.ledger_verify().ok

    apps = migrate(BEFORE)
    Entry, TreeNode = apps.get_model("ledger", "Entry"), apps.get_model("ledger", "TreeNode")
    back = {e.index: e for e in Entry.objects.all()}
    assert [bytes(back[i].payload) for i in range(SIZE)] == payloads
    assert all(back[i].kind == "consent.check" for i in range(SIZE + 2))
    assert all(bytes(back[i].leaf_hash) == nodes[(0, i)] for i in range(SIZE))
    moved_back = {(n.level, n.index): bytes(n.hash) for n in TreeNode.objects.all()}
    assert {key: value for key, value in moved_back.items() if key[1] << key[0] < SIZE} == {
        key: value for key, value in nodes.items()}


def test_an_entry_altered_before_the_move_is_still_found(at_0002):
    old_log(at_0002, altered=77)
    migrate(AFTER)
    migrate_on()
    report = services.ledger_verify()
    assert report.first_bad_index == 77 and report.headline == "entry 77: leaf hash mismatch"


def test_a_log_with_a_gap_is_refused_rather_than_moved(at_0002):
    old_log(at_0002)
    at_0002.get_model("ledger", "Entry").objects.filter(index=300).delete()
    with pytest.raises(RuntimeError, match="sealed entry 300 is missing"):
        migrate(AFTER)
    # Rolled back whole: nothing half-moved, the old layout as it was.
    assert ("ledger", "0003_tiles") not in MigrationRecorder(connection).applied_migrations()
    assert "ledger_entrybundle" not in connection.introspection.table_names()
    assert at_0002.get_model("ledger", "Entry").objects.exclude(payload=None).count() == SIZE + 1
    for name in ("Entry", "TreeNode", "TreeState", "Checkpoint"):  # so the fixture can migrate on
        at_0002.get_model("ledger", name).objects.all().delete()


@pytest.mark.django_db
def test_bundles_are_compressed_and_tiles_are_not_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("column storage is PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        lz4 = cursor.fetchone()[0]
        cursor.execute("SELECT attrelid::regclass::text, attcompression, attstorage FROM pg_attribute WHERE"
                       " (attrelid, attname) IN (('ledger_entrybundle'::regclass, 'data'),"
                       " ('ledger_hashtile'::regclass, 'hashes')) ORDER BY 1")
        assert cursor.fetchall() == [("ledger_entrybundle", "l" if lz4 else "", "x"),
                                     ("ledger_hashtile", "", "e")]
