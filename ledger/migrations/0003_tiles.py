"""Sealed entries move into bundles and stored subtrees into hash tiles (C2SP tlog-tiles).

The stored bytes are moved, never recomputed: a log altered before this migration stays
altered, and `verify_ledger` finds it. Reversible: the way back recomputes every subtree
from the bundles' payloads, as the old sequencer stored them.
"""

import json

from django.db import migrations, models

from ledger import merkle, tiles

CHUNK = 2048


def _in_order(rows, what: str):
    """Yields rows (index, value) checking the indexes run 0, 1, 2, ... without a gap."""
    expected = 0
    for index, value in rows:
        if index != expected:
            raise RuntimeError(
                f"ledger migration: {what} {expected} is missing (next is {index}); "
                "run verify_ledger on the previous release and repair the log first"
            )
        expected += 1
        yield bytes(value)


def _batches(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def to_tiles(apps, schema_editor):
    Entry = apps.get_model("ledger", "Entry")
    EntryBundle = apps.get_model("ledger", "EntryBundle")
    HashTile = apps.get_model("ledger", "HashTile")
    TreeNode = apps.get_model("ledger", "TreeNode")
    sealed = Entry.objects.filter(index__isnull=False).order_by("index").values_list("index", "payload")
    payloads = _in_order(sealed.iterator(chunk_size=CHUNK), "sealed entry")
    for number, bundle in enumerate(_batches(payloads, tiles.WIDTH)):
        if any(tiles.SEPARATOR in payload for payload in bundle):
            raise RuntimeError(f"ledger migration: an entry of bundle {number} holds a raw newline")
        EntryBundle.objects.create(index=number, data=tiles.SEPARATOR.join(bundle))
    levels = sorted(
        set(TreeNode.objects.values_list("level", flat=True).distinct())
        & set(range(0, 64, tiles.HEIGHT))
    )
    for level in levels:
        rows = TreeNode.objects.filter(level=level).order_by("index").values_list("index", "hash")
        hashes = _in_order(rows.iterator(chunk_size=CHUNK), f"tree node at level {level}, index")
        for number, run in enumerate(_batches(hashes, tiles.WIDTH)):
            HashTile.objects.create(level=level // tiles.HEIGHT, index=number, hashes=b"".join(run))
    Entry.objects.filter(index__isnull=False).update(payload=None)


def from_tiles(apps, schema_editor):
    Entry = apps.get_model("ledger", "Entry")
    EntryBundle = apps.get_model("ledger", "EntryBundle")
    HashTile = apps.get_model("ledger", "HashTile")
    TreeNode = apps.get_model("ledger", "TreeNode")
    tree = merkle.CompactRange()
    bundles = EntryBundle.objects.order_by("index").values_list("index", "data")
    for data in _in_order(bundles.iterator(chunk_size=64), "entry bundle"):
        nodes = []
        for payload in tiles.split_bundle(data):
            leaf = merkle.leaf_hash(payload)
            Entry.objects.filter(index=tree.size).update(
                payload=payload, leaf_hash=leaf, kind=json.loads(payload).get("kind", "")
            )
            nodes += tree.append(leaf)
        TreeNode.objects.bulk_create(
            [TreeNode(level=level, index=index, hash=digest) for level, index, digest in nodes]
        )
    HashTile.objects.all().delete()
    EntryBundle.objects.all().delete()


def storage(apps, schema_editor):
    """PostgreSQL: bundles (JSON) compressed with lz4 where the server has it, a tenth of
    their size here and as cheap to read as uncompressed; hash tiles never compressed
    (hashes do not compress, so trying costs CPU on every write)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings"
                       " WHERE name = 'default_toast_compression'")
        row = cursor.fetchone()
    if row and row[0]:
        schema_editor.execute('ALTER TABLE ledger_entrybundle ALTER COLUMN "data" SET COMPRESSION lz4')
    schema_editor.execute('ALTER TABLE ledger_hashtile ALTER COLUMN "hashes" SET STORAGE EXTERNAL')


class Migration(migrations.Migration):

    dependencies = [
        ("ledger", "0002_consortium"),
    ]

    operations = [
        migrations.CreateModel(
            name="EntryBundle",
            fields=[
                ("index", models.BigIntegerField(primary_key=True, serialize=False)),
                ("data", models.BinaryField()),
            ],
        ),
        migrations.CreateModel(
            name="HashTile",
            fields=[
                ("pk", models.CompositePrimaryKey("level", "index", blank=True, editable=False,
                                                  primary_key=True, serialize=False)),
                ("level", models.PositiveSmallIntegerField()),
                ("index", models.BigIntegerField()),
                ("hashes", models.BinaryField()),
            ],
        ),
        migrations.RemoveConstraint(model_name="entry", name="ledger_entry_sealed_together"),
        migrations.AlterField(model_name="entry", name="payload", field=models.BinaryField(null=True)),
        migrations.RunPython(to_tiles, from_tiles),
        # A default, so that the way back can add the column again before filling it.
        migrations.AlterField(
            model_name="entry", name="kind", field=models.CharField(max_length=64, default="")
        ),
        migrations.RemoveField(model_name="entry", name="kind"),
        migrations.RemoveField(model_name="entry", name="leaf_hash"),
        migrations.DeleteModel(name="TreeNode"),
        migrations.AddConstraint(
            model_name="entry",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("index__isnull", True), ("payload__isnull", False), ("sealed_at__isnull", True)
                )
                | models.Q(
                    ("index__gte", 0), ("payload__isnull", True), ("sealed_at__isnull", False)
                ),
                name="ledger_entry_sealed_moved",
            ),
        ),
        migrations.RunPython(storage, migrations.RunPython.noop),
    ]
