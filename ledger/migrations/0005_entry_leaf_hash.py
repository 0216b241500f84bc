"""Entry rows carry their leaf hash, which binds each row to its leaf: verify_ledger then
finds a row deleted, moved to another index (two rows' indexes swapped) or altered, and a
receipt is never built from a row that does not match its leaf.

The rows sealed before are filled from the payloads in their bundles (a row whose entry
its bundle lacks, from the level-0 hash tile), without recomputing or repairing anything
else, so an alteration made before stays visible to verify_ledger. A row moved before
this migration takes the leaf of the index it holds: nothing recorded where it was.
"""

from django.db import migrations, models

from ledger import merkle, tiles

# Entries updated a statement (64 bundles).
CHUNK = 16384


def _update(connection, table: str, pairs: list[tuple[int, bytes]]) -> None:
    """Sets leaf_hash of the sealed rows (index, leaf hash) in pairs."""
    if not pairs:
        return
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            indexes, hashes = zip(*pairs, strict=True)
            cursor.execute(
                f"UPDATE {qn(table)} AS e SET {qn('leaf_hash')} = v.h FROM "
                f"unnest(%s::bigint[], %s::bytea[]) AS v (i, h) WHERE e.{qn('index')} = v.i",
                [list(indexes), list(hashes)],
            )
        else:
            cursor.executemany(
                f"UPDATE {qn(table)} SET {qn('leaf_hash')} = %s WHERE {qn('index')} = %s",
                [(digest, index) for index, digest in pairs],
            )


def fill(apps, schema_editor):
    Entry = apps.get_model("ledger", "Entry")
    EntryBundle = apps.get_model("ledger", "EntryBundle")
    HashTile = apps.get_model("ledger", "HashTile")
    connection = schema_editor.connection
    table = Entry._meta.db_table
    pairs: list[tuple[int, bytes]] = []
    bundles = EntryBundle.objects.order_by("index").values_list("index", "data")
    for number, data in bundles.iterator(chunk_size=64):
        base = number * tiles.WIDTH
        pairs += [(base + offset, merkle.leaf_hash(payload))
                  for offset, payload in enumerate(tiles.split_bundle(bytes(data))[: tiles.WIDTH])]
        if len(pairs) >= CHUNK:
            _update(connection, table, pairs)
            pairs = []
    _update(connection, table, pairs)
    # Sealed rows their bundles do not hold (a log damaged before): the stored leaf hash.
    left = list(Entry.objects.filter(index__isnull=False, leaf_hash__isnull=True)
                .order_by("index").values_list("index", flat=True))
    stored = {}
    for number in sorted({index // tiles.WIDTH for index in left}):
        data = HashTile.objects.filter(level=0, index=number).values_list("hashes", flat=True).first()
        stored[number] = bytes(data) if data is not None else b""
    pairs = []
    for index in left:
        number, offset = divmod(index, tiles.WIDTH)
        digest = stored[number][offset * merkle.HASH_SIZE : (offset + 1) * merkle.HASH_SIZE]
        if len(digest) != merkle.HASH_SIZE:
            raise RuntimeError(
                f"ledger migration: sealed entry {index} is in neither its bundle nor its hash "
                "tile; run verify_ledger on the previous release and repair the log first"
            )
        pairs.append((index, digest))
    _update(connection, table, pairs)


class Migration(migrations.Migration):

    dependencies = [
        ("ledger", "0004_entry_openings"),
    ]

    operations = [
        migrations.AddField(
            model_name="entry",
            name="leaf_hash",
            field=models.BinaryField(max_length=32, null=True),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name="entry",
            name="ledger_entry_sealed_moved",
        ),
        migrations.AddConstraint(
            model_name="entry",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("index__isnull", True), ("leaf_hash__isnull", True), ("payload__isnull", False),
                    ("sealed_at__isnull", True),
                )
                | models.Q(
                    ("index__gte", 0), ("leaf_hash__isnull", False), ("payload__isnull", True),
                    ("sealed_at__isnull", False),
                ),
                name="ledger_entry_sealed_bound",
            ),
        ),
    ]
