"""Alter a sealed log the way someone with write access to the database could: its entry
bundles and hash tiles (ledger.tiles) and the entry rows records point at, so tests can
show that verification finds it."""

from django.db import connection

from ledger import merkle, tiles
from ledger.models import Entry, EntryBundle, HashTile, TreeState

# An index no test log reaches, to move a row out of the way of the unique index.
ASIDE = 1 << 62


def payloads(number: int) -> list[bytes]:
    return tiles.split_bundle(bytes(EntryBundle.objects.get(index=number).data))


def payload_of(index: int) -> bytes:
    number, offset = divmod(index, tiles.WIDTH)
    return payloads(number)[offset]


def bundle_write(number: int, held: list[bytes]) -> None:
    EntryBundle.objects.filter(index=number).update(data=tiles.SEPARATOR.join(held))


def payload_set(index: int, payload: bytes) -> None:
    """Replaces the bytes of sealed entry index in its bundle."""
    number, offset = divmod(index, tiles.WIDTH)
    held = payloads(number)
    held[offset] = payload
    bundle_write(number, held)


def entries_cut(index: int) -> None:
    """Removes sealed entries index, index + 1, ... to the end of its bundle."""
    number, offset = divmod(index, tiles.WIDTH)
    if offset == 0:
        EntryBundle.objects.filter(index=number).delete()
    else:
        bundle_write(number, payloads(number)[:offset])


def _tile(level: int, index: int) -> tuple[tuple[int, int], int, bytes]:
    assert level % tiles.HEIGHT == 0, "only levels 0, 8, 16, ... are stored"
    key = (level // tiles.HEIGHT, index // tiles.WIDTH)
    data = bytes(HashTile.objects.get(level=key[0], index=key[1]).hashes)
    return key, (index % tiles.WIDTH) * merkle.HASH_SIZE, data


def stored_hash(level: int, index: int) -> bytes:
    _, at, data = _tile(level, index)
    return data[at : at + merkle.HASH_SIZE]


def hash_set(level: int, index: int, digest: bytes) -> None:
    """Replaces the stored hash of subtree (level, index), level a multiple of 8."""
    (tile_level, number), at, data = _tile(level, index)
    data = data[:at] + digest + data[at + merkle.HASH_SIZE :]
    HashTile.objects.filter(level=tile_level, index=number).update(hashes=data)


def hashes_cut(level: int, index: int) -> None:
    """Removes the stored hashes of subtrees (level, index), (level, index + 1), ... to the
    end of their tile."""
    (tile_level, number), at, data = _tile(level, index)
    HashTile.objects.filter(level=tile_level, index=number).update(hashes=data[:at])


def tiles_rebuild() -> bytes:
    """Recomputes every hash tile and the head from the bundles as they are now, as a
    sequencer rewriting history would; returns the new root."""
    size = TreeState.objects.get().size
    tree = merkle.CompactRange()
    numbers = EntryBundle.objects.order_by("index").values_list("index", flat=True)
    for number in numbers:
        leaves = [merkle.leaf_hash(p) for p in payloads(number)][: size - tree.size]
        runs = tree.extend(leaves)
        stored = {(t.level, t.index): bytes(t.hashes) for t in HashTile.objects.all()}
        for (level, index), data in tiles.extend_tiles(tree.size - len(leaves), runs, stored).items():
            HashTile.objects.update_or_create(level=level, index=index, defaults={"hashes": data})
    if tree.size == 0:
        HashTile.objects.all().delete()
    return tree.root()


def rows_swap(a: int, b: int, *, leaf_hashes: bool = False) -> tuple[int, int]:
    """Swaps the indexes of the entry rows at sealed indexes a and b (with leaf_hashes,
    their leaf hashes too): the records that point at either row then point at the
    other's leaf. Returns the rows' ids (the one at a first)."""
    first, second = (Entry.objects.values_list("id", "leaf_hash").get(index=i) for i in (a, b))
    hashes = (first[1], second[1]) if leaf_hashes else (second[1], first[1])
    Entry.objects.filter(id=first[0]).update(index=ASIDE)
    Entry.objects.filter(id=second[0]).update(index=a, leaf_hash=hashes[0])
    Entry.objects.filter(id=first[0]).update(index=b, leaf_hash=hashes[1])
    return first[0], second[0]


def row_leaf_hash_clear(index: int) -> int:
    """Clears the leaf hash of the entry row at a sealed index, past the check constraint
    that forbids it (dropped and put back unchecked on PostgreSQL, ignored on SQLite), as
    an old sequencer or a hand edit could. Returns the row's id."""
    entry_id = Entry.objects.values_list("id", flat=True).get(index=index)
    table, name = Entry._meta.db_table, "ledger_entry_sealed_bound"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = %s", [name])
            (definition,) = cursor.fetchone()
            cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
            cursor.execute(f"UPDATE {table} SET leaf_hash = NULL WHERE id = %s", [entry_id])
            cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition} NOT VALID")
        else:
            cursor.execute("PRAGMA ignore_check_constraints = ON")
            try:
                cursor.execute(f"UPDATE {table} SET leaf_hash = NULL WHERE id = %s", [entry_id])
            finally:
                cursor.execute("PRAGMA ignore_check_constraints = OFF")
    return entry_id
