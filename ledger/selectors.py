"""Reads: tree head, checkpoints, entries and proofs. Each proof is one query (its tiles)."""

import base64
import json
import threading

from cachetools import LRUCache
from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Q

from ledger import merkle, note, tiles
from ledger.db import prepared_rows
from ledger.keys import ledger_verifier_key
from ledger.models import (
    Checkpoint,
    Cosignature,
    Entry,
    EntryBundle,
    EntryOpenings,
    HashTile,
    Member,
    TreeState,
    WitnessRefusal,
)

RECEIPT_FORMAT = "consent-ledger-receipt/v1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _tiles_sql() -> str:
    # A subquery a key, which PostgreSQL cannot flatten into a join: one primary-key probe
    # each whatever the table's size (a join may be planned as a scan of the whole table).
    table = HashTile._meta.db_table
    return (f"SELECT k.level, k.index, (SELECT t.hashes FROM {table} t WHERE t.level = k.level"
            f" AND t.index = k.index) FROM unnest(%s::smallint[], %s::bigint[]) AS k(level, index)")


def hash_tiles(*, keys) -> dict[tiles.Tile, bytes]:
    """The stored hash tiles among these (level, index) keys, in one query.

    On PostgreSQL one prepared statement whose text does not change with the keys: they
    travel as two arrays (binary results: the tiles arrive as bytes, not hex), and each is
    one primary-key probe. (The ORM's (level, index) IN (...) has a new text for every
    proof, is planned every time and runs as a bitmap OR.)
    """
    keys = list(keys)
    if not keys:
        return {}
    if connection.vendor == "postgresql":
        levels, indexes = zip(*keys, strict=True)
        rows = prepared_rows(_tiles_sql(), [list(levels), list(indexes)], binary=True)
    else:
        rows = HashTile.objects.filter(pk__in=keys).values_list("level", "index", "hashes")
    return {(level, index): bytes(data) for level, index, data in rows if data is not None}


# Hash tiles read for proofs, by (level, index), with the levels they make
# (tiles.tile_levels): a tile's bytes never change once written and a partial tile only
# grows, so a copy holds good for every subtree in it; one too short for a newer tree is
# read again. The tiles near the top serve every proof. Bounded (about 16 KiB a full
# tile), per process.
_tile_levels: LRUCache = LRUCache(maxsize=1024)
_tile_levels_lock = threading.Lock()


def subtree_hashes(*, pairs) -> dict[tuple[int, int], bytes]:
    """The complete subtrees (level, index) among pairs that the log holds, from the hash
    tiles they lie in: at most one query, for the tiles not remembered."""
    located = [(pair, tiles.locate(*pair)) for pair in pairs]
    keys = {(tile_level, tile_index) for _, (tile_level, tile_index, _, _) in located}
    with _tile_levels_lock:
        levels = {key: _tile_levels.get(key) for key in keys}
    stale = {
        (tile_level, tile_index)
        for _, (tile_level, tile_index, first, count) in located
        if levels[(tile_level, tile_index)] is None
        or len(levels[(tile_level, tile_index)][0]) < (first + count) * merkle.HASH_SIZE
    }
    if stale:
        read = {key: tiles.tile_levels(data) for key, data in hash_tiles(keys=stale).items()}
        levels.update(read)
        with _tile_levels_lock:
            _tile_levels.update(read)
    found = {}
    for pair, (tile_level, tile_index, first, count) in located:
        held = levels[(tile_level, tile_index)]
        digest = None if held is None else tiles.pick(held, first, count)
        if digest is not None:
            found[pair] = digest
    return found


def _hashes(ranges, extra=()) -> dict[tuple[int, int], bytes]:
    needed = merkle.subtrees_of(ranges) | set(extra)
    found = subtree_hashes(pairs=needed)
    if len(found) != len(needed):
        raise LookupError("the tree is smaller than the requested size")
    return found


def tree_size() -> int:
    return TreeState.objects.filter(id=1).values_list("size", flat=True).first() or 0


def checkpoint_latest() -> Checkpoint | None:
    return Checkpoint.objects.order_by("-size").first()


def entry_payloads(*, start: int, limit: int) -> list[bytes]:
    """Sealed leaves' bytes from index start, in order, at most limit of them, as far as
    the log is sealed (read from their bundles)."""
    if start < 0 or limit < 1:
        return []
    first, last = start // tiles.WIDTH, (start + limit - 1) // tiles.WIDTH
    size = tree_size()
    bundles = (EntryBundle.objects.filter(index__gte=first, index__lte=last)
               .order_by("index").values_list("index", "data"))
    out: list[bytes] = []
    for number, data in bundles:
        base = number * tiles.WIDTH
        if base > start + len(out):
            break  # a missing bundle: the run ends before it
        payloads = tiles.split_bundle(bytes(data))
        out += payloads[start + len(out) - base : min(start + limit, size) - base]
    return out


def tile(*, level: int, index: int, width: int) -> bytes | None:
    """The C2SP tlog-tiles hash tile (level, index) of this width (256: a full tile), or
    None when the log does not hold that many of its hashes. Read from the database."""
    data = hash_tiles(keys=[(level, index)]).get((level, index))
    if data is None or len(data) < width * merkle.HASH_SIZE:
        return None
    return data[: width * merkle.HASH_SIZE]


def entry_bundle(*, index: int, width: int) -> bytes | None:
    """The C2SP tlog-tiles entry bundle `index` of this width (256: full), length-prefixed
    as the spec has it, or None when the log does not hold that many of its entries."""
    data = EntryBundle.objects.filter(index=index).values_list("data", flat=True).first()
    payloads = [] if data is None else tiles.split_bundle(bytes(data))
    if len(payloads) < width:
        return None
    return tiles.spec_bundle(payloads[:width])


def entry_bytes(*, entry_id: int) -> bytes:
    """An entry's payload, pending or sealed: the bytes the log hashes (or will). Raises
    EntryRowMismatch for a sealed row that does not match the leaf at its index."""
    row = Entry.objects.values_list("index", "payload", "leaf_hash").get(id=entry_id)
    index, payload, leaf_hash = row
    if index is None:
        return bytes(payload)
    return _sealed_payload(entry_id, index, leaf_hash, _bundle_data(index))


def _bundle_data(index: int) -> bytes | None:
    bundles = EntryBundle.objects.filter(index=index // tiles.WIDTH)
    return bundles.values_list("data", flat=True).first()


def _bundled(index: int, bundle: bytes | None) -> bytes:
    payloads = tiles.split_bundle(bytes(bundle)) if bundle is not None else []
    if index % tiles.WIDTH >= len(payloads):
        raise LookupError(f"sealed entry {index} is missing from its bundle: run verify_ledger")
    return payloads[index % tiles.WIDTH]


class EntryRowMismatch(LookupError):
    """A sealed entry row whose leaf hash is not the leaf's at the index it holds (moved
    to another index, e.g. two rows' indexes swapped, or altered): what the log holds there
    is another record's, so no receipt or payload is served for it. verify_ledger names it."""


def _row_bound(entry_id: int, index: int, row_leaf_hash: bytes | None, leaf_hash: bytes) -> None:
    """Raises EntryRowMismatch unless the row's leaf hash is leaf_hash, the leaf's at index."""
    if row_leaf_hash is None or bytes(row_leaf_hash) != leaf_hash:
        raise EntryRowMismatch(f"entry row {entry_id} does not match the leaf at index {index}: "
                               "run verify_ledger")


def _sealed_payload(entry_id: int, index: int, row_leaf_hash: bytes | None,
                    bundle: bytes | None) -> bytes:
    """The payload of the sealed entry at index from its bundle, once checked to be the
    one the row (entry_id, with row_leaf_hash) was sealed with."""
    payload = _bundled(index, bundle)
    _row_bound(entry_id, index, row_leaf_hash, merkle.leaf_hash(payload))
    return payload


def entry_payload(*, index: int) -> bytes | None:
    """The sealed leaf's bytes exactly as hashed, or None."""
    found = entry_payloads(start=index, limit=1)
    return found[0] if found else None


def leaf_inclusion(*, index: int, tree_size: int) -> tuple[bytes, list[bytes]]:
    """The leaf hash at index and its inclusion proof in the tree of tree_size, in one query."""
    ranges = merkle.inclusion_ranges(index, tree_size)
    hashes = _hashes(ranges, extra=[(0, index)])
    return hashes[(0, index)], merkle.hash_ranges(ranges, lambda level, i: hashes[(level, i)])


def proof_inclusion(*, index: int, tree_size: int) -> list[bytes]:
    return leaf_inclusion(index=index, tree_size=tree_size)[1]


def proof_consistency(*, first: int, second: int) -> list[bytes]:
    ranges = merkle.consistency_ranges(first, second)
    hashes = _hashes(ranges)
    return merkle.hash_ranges(ranges, lambda level, i: hashes[(level, i)])


def entry_evidence(*, entry_id: int) -> dict | None:
    """Proof that a sealed entry is in the latest signed checkpoint; None while pending.

    Raises Entry.DoesNotExist for an unknown id, EntryRowMismatch for a row that does not
    match the leaf at its index.
    """
    index, row_leaf_hash = Entry.objects.values_list("index", "leaf_hash").get(id=entry_id)
    if index is None:
        return None
    checkpoint = checkpoint_latest()
    leaf, proof = leaf_inclusion(index=index, tree_size=checkpoint.size)
    _row_bound(entry_id, index, row_leaf_hash, leaf)
    body, _ = note.split_note(checkpoint.note)
    return {
        "index": index,
        "tree_size": checkpoint.size,
        "leaf_hash": _b64(leaf),
        "inclusion_proof": [_b64(h) for h in proof],
        "root_hash": _b64(bytes(checkpoint.root_hash)),
        "checkpoint": checkpoint.note,
        "origin": note.parse_checkpoint(body).origin,
        "verifier_key": ledger_verifier_key(),
    }


def ledger_info() -> dict:
    state = TreeState.objects.filter(id=1).first()
    size = state.size if state else 0
    return {
        "origin": settings.LEDGER_ORIGIN,
        "size": size,
        "root_hash": _b64(bytes(state.root_hash) if state else merkle.EMPTY_ROOT),
        # Made on first use, so a consumer can pin it before anything is sealed.
        "verifier_key": ledger_verifier_key(),
        # The head row changes only when a batch is sealed.
        "last_sealed_at": state.updated_at if size else None,
        "pending": Entry.objects.filter(index__isnull=True).count(),
        "witnesses": witness_summary(),
    }


# -- witnesses, cosignatures and receipts --


def _witness_members():
    return Member.objects.filter(active=True).exclude(verifier_key="")


def witnesses_to_push() -> bool:
    """Whether any registered witness has a URL to send checkpoints to."""
    return _witness_members().exclude(witness_url="").exists()


def witness_quorum() -> int:
    return settings.LEDGER_WITNESS_QUORUM


def _final_checkpoints():
    """Checkpoints cosigned by at least the quorum of active registered witnesses."""
    if witness_quorum() == 0:
        return Checkpoint.objects.all()  # the log's signature suffices; skip the GROUP BY
    counted = Checkpoint.objects.annotate(
        cosigners=Count(
            "cosignatures",
            filter=Q(cosignatures__member__active=True) & ~Q(cosignatures__member__verifier_key=""),
        )
    )
    return counted.filter(cosigners__gte=witness_quorum())


def checkpoint_final_latest() -> Checkpoint | None:
    return _final_checkpoints().order_by("-size").first()


def checkpoint_cosigned_note(*, checkpoint: Checkpoint) -> str:
    """The log's signed note with every registered witness's cosignature line appended."""
    lines = (
        checkpoint.cosignatures.filter(member__active=True)
        .exclude(member__verifier_key="")
        .order_by("member_id")
        .values_list("line", flat=True)
    )
    return checkpoint.note + "".join(lines)


def witness_summary() -> dict:
    """The witnessing state for ledger_info and the API: quorum, final size, refusals."""
    final = checkpoint_final_latest()
    latest_refusal = WitnessRefusal.objects.select_related("member").order_by("-id").first()
    return {
        "quorum": witness_quorum(),
        "registered": _witness_members().count(),
        "final_size": final.size if final else None,
        "refusals": WitnessRefusal.objects.count(),
        "latest_refusal": _refusal_dict(latest_refusal) if latest_refusal else None,
    }


def _refusal_dict(refusal: WitnessRefusal) -> dict:
    return {
        "witness": refusal.member.name,
        "size": refusal.size,
        "root_hash": _b64(bytes(refusal.root_hash)),
        "status": refusal.status,
        "detail": refusal.detail.strip(),
        "at": refusal.created_at,
    }


def witness_overview(*, refusals: int = 20) -> dict:
    """For the ethics dashboard: each witness's last cosigned size and the recent refusals.

    A refusal means a witness saw a checkpoint it could not reconcile with one it had
    cosigned: a rewritten or forked log, which the committee must investigate.
    """
    witnesses = _witness_members().annotate(
        last_cosigned_size=Max("cosignatures__checkpoint__size"),
        last_cosigned_at=Max("cosignatures__created_at"),
        refusal_count=Count("refusals", distinct=True),
    )
    return {
        **witness_summary(),
        "witnesses": [
            {
                "name": w.name,
                "verifier_key": w.verifier_key,
                "url": w.witness_url,
                "last_cosigned_size": w.last_cosigned_size,
                "last_cosigned_at": w.last_cosigned_at,
                "refusals": w.refusal_count,
            }
            for w in witnesses.order_by("name")
        ],
        "recent_refusals": [
            _refusal_dict(r)
            for r in WitnessRefusal.objects.select_related("member").order_by("-id")[:refusals]
        ],
    }


# Final receipts by entry id, each with the row it was built from: (index, leaf hash). A
# sealed entry never changes, and a proof against a final checkpoint stays true and
# checkable for good, so a receipt once final is served again as it was (against that
# checkpoint, not a newer one) instead of being rebuilt: a custodian asks about the same
# consent event again and again. What can change is who counts as a witness and the
# quorum, and, if someone alters the database, the entry row (its index swapped with
# another row's, then swapped back): so each reuse reads those again (one small query) and
# rebuilds the receipt, which checks the row against its leaf, when they differ. Receipts
# that are not final yet are never kept. Bounded, per process.
_final_receipts: LRUCache = LRUCache(maxsize=8192)
_final_receipts_lock = threading.Lock()


def _entry_now_sql() -> str:
    """The entry row's index and leaf hash, with a row per registered witness key in id
    order (one row with a null key when there is none)."""
    entries, members = Entry._meta.db_table, Member._meta.db_table
    return (f'SELECT e."index", e.leaf_hash, m.verifier_key FROM {entries} e'
            f" LEFT JOIN {members} m ON {_WITNESS_SQL} WHERE e.id = %s ORDER BY m.id")


def entry_receipt(*, entry_id: int) -> dict | None:
    """A self-contained receipt for a sealed entry, checkable offline by `python -m ledger.verify`.

    Uses the newest checkpoint that has the quorum of witness cosignatures and covers
    the entry; while none does yet, the newest checkpoint, with "final": false (the
    verifier then fails the quorum check). None while the entry is pending; raises
    Entry.DoesNotExist for an unknown id, EntryRowMismatch for a row whose leaf hash is not
    the leaf's at the index it holds (a receipt of another record's entry is never served).
    A final receipt is remembered (see above), and served again only for the same row.
    """
    with _final_receipts_lock:
        cached = _final_receipts.get(entry_id)
    if cached is not None:
        row, receipt = cached
        # The same query count as reading the witness keys alone (prepared on PostgreSQL).
        rows = prepared_rows(_entry_now_sql(), [entry_id], binary=True)
        if not rows:
            with _final_receipts_lock:
                _final_receipts.pop(entry_id, None)
            raise Entry.DoesNotExist(f"no ledger entry {entry_id}")
        index, leaf_hash = rows[0][0], rows[0][1]
        witnesses = [key for _, _, key in rows if key is not None]
        now = (index, None if leaf_hash is None else bytes(leaf_hash))
        if now == row and (receipt["witness_keys"], receipt["quorum"]) == (
                tuple(witnesses), witness_quorum()):
            return {**receipt, "inclusion_proof": list(receipt["inclusion_proof"]),
                    "witness_keys": witnesses}
        with _final_receipts_lock:
            _final_receipts.pop(entry_id, None)
    receipt = _entry_receipt(entry_id)
    if receipt is not None and receipt["final"]:
        row = (receipt["index"], merkle.leaf_hash(base64.b64decode(receipt["leaf"])))
        with _final_receipts_lock:
            _final_receipts[entry_id] = (row, {
                **receipt, "inclusion_proof": tuple(receipt["inclusion_proof"]),
                "witness_keys": tuple(receipt["witness_keys"])})
    return receipt


def entry_receipt_just_appended(*, entry_id: int) -> dict | None:
    """entry_receipt for an entry whose transaction has just committed: None (pending)
    without a query when a worker seals it, since it cannot be sealed yet; only in-process
    tasks (the embedded default) have sealed it already."""
    from celery import current_app

    return entry_receipt(entry_id=entry_id) if current_app.conf.task_always_eager else None


# The SQL twin of _witness_members, for the prepared statements below (alias m).
_WITNESS_SQL = "m.active AND m.verifier_key <> ''"


def _witness_keys() -> list[str]:
    """The registered witnesses' verifier keys; every remembered receipt asks (prepared on
    PostgreSQL)."""
    if connection.vendor == "postgresql":
        rows = prepared_rows(
            f"SELECT m.verifier_key FROM {Member._meta.db_table} m WHERE {_WITNESS_SQL} ORDER BY m.id", [])
        return [key for (key,) in rows]
    return list(_witness_members().order_by("id").values_list("verifier_key", flat=True))


def _receipt_facts_sql() -> str:
    """The entry, the newest checkpoint covering it that has the quorum (the same rule as
    _final_checkpoints), that checkpoint's witness cosignature lines and the registered
    witnesses' keys, in one statement (PostgreSQL)."""
    entries, checkpoints = Entry._meta.db_table, Checkpoint._meta.db_table
    bundles = EntryBundle._meta.db_table
    cosignatures, members = Cosignature._meta.db_table, Member._meta.db_table
    witness = _WITNESS_SQL
    cosigners = (f"SELECT count(*) FROM {cosignatures} s JOIN {members} m ON m.id = s.member_id"
                 f" WHERE s.checkpoint_id = c.id AND {witness}")
    return (
        f"SELECT e.index, e.leaf_hash, b.data, f.size, f.note,"
        f" (SELECT string_agg(s.line, '' ORDER BY s.member_id) FROM {cosignatures} s"
        f"   JOIN {members} m ON m.id = s.member_id WHERE s.checkpoint_id = f.id AND {witness}),"
        f" (SELECT string_agg(m.verifier_key, E'\\n' ORDER BY m.id) FROM {members} m WHERE {witness})"
        f" FROM {entries} e LEFT JOIN {bundles} b ON b.index = e.index / {tiles.WIDTH}"
        f" LEFT JOIN LATERAL ("
        f"   SELECT c.id, c.size, c.note FROM {checkpoints} c"
        f"   WHERE c.size > e.index AND (%s = 0 OR ({cosigners}) >= %s)"
        f"   ORDER BY c.size DESC LIMIT 1) f ON true"
        f" WHERE e.id = %s"
    )


def _entry_receipt(entry_id: int) -> dict | None:
    if connection.vendor == "postgresql":
        # Two prepared statements (this one and the proof's tiles, none for tiles
        # remembered) when a final checkpoint covers the entry, as for nearly every receipt
        # a check asks for.
        quorum = witness_quorum()
        rows = prepared_rows(_receipt_facts_sql(), [quorum, quorum, entry_id], binary=True)
        if not rows:
            raise Entry.DoesNotExist(f"no ledger entry {entry_id}")
        index, row_leaf_hash, bundle, size, checkpoint_note, lines, keys = rows[0]
        if index is None:
            return None
        payload = _sealed_payload(entry_id, index, row_leaf_hash, bundle)
        witness_keys = keys.split("\n") if keys else []
        if size is not None:
            cosigned = checkpoint_note + (lines or "") if witness_keys else checkpoint_note
            return _receipt(index=index, payload=payload, size=size, checkpoint_note=checkpoint_note,
                            cosigned=cosigned, witness_keys=witness_keys, final=True)
        return _receipt_not_final(index=index, payload=payload, witness_keys=witness_keys)
    index, row_leaf_hash = Entry.objects.filter(id=entry_id).values_list("index", "leaf_hash").get()
    if index is None:
        return None
    payload = _sealed_payload(entry_id, index, row_leaf_hash, _bundle_data(index))
    checkpoint = _final_checkpoints().filter(size__gt=index).order_by("-size").first()
    witness_keys = _witness_keys()
    if checkpoint is None:
        return _receipt_not_final(index=index, payload=payload, witness_keys=witness_keys)
    # Without registered witnesses there is no cosignature to append.
    cosigned = checkpoint_cosigned_note(checkpoint=checkpoint) if witness_keys else checkpoint.note
    return _receipt(index=index, payload=payload, size=checkpoint.size, checkpoint_note=checkpoint.note,
                    cosigned=cosigned, witness_keys=witness_keys, final=True)


def _receipt_not_final(*, index: int, payload: bytes, witness_keys: list[str]) -> dict:
    """Against the newest checkpoint, while no checkpoint covering the entry has the quorum."""
    checkpoint = checkpoint_latest()
    cosigned = checkpoint_cosigned_note(checkpoint=checkpoint) if witness_keys else checkpoint.note
    return _receipt(index=index, payload=payload, size=checkpoint.size, checkpoint_note=checkpoint.note,
                    cosigned=cosigned, witness_keys=witness_keys, final=False)


def _receipt(*, index: int, payload: bytes, size: int, checkpoint_note: str, cosigned: str,
             witness_keys: list[str], final: bool) -> dict:
    _, proof = leaf_inclusion(index=index, tree_size=size)
    body, _ = note.split_note(checkpoint_note)
    return {
        "format": RECEIPT_FORMAT,
        "origin": note.parse_checkpoint(body).origin,
        "index": index,
        "leaf": _b64(payload),
        "tree_size": size,
        "inclusion_proof": [_b64(h) for h in proof],
        "checkpoint": cosigned,
        "log_key": ledger_verifier_key(),
        "witness_keys": witness_keys,
        "quorum": witness_quorum(),
        "final": final,
    }


def entry_openings(*, entry_ids, fields) -> dict[int, dict]:
    """{entry id: {field: opening}} for the openings of `fields` kept for these entries
    (ledger.blinding); the caller names the fields the asker is entitled to. An entry
    without openings (erased, or sealed before entries were blinded) is absent."""
    wanted = set(fields)
    found = {}
    for entry_id, openings in EntryOpenings.objects.filter(entry_id__in=list(entry_ids)).values_list(
            "entry_id", "openings"):
        if isinstance(openings, str):
            openings = json.loads(openings)
        found[entry_id] = {field: value for field, value in openings.items() if field in wanted}
    return found


def entry_receipt_opened(*, index: int) -> dict | None:
    """The receipt of the sealed entry at `index` with every opening kept for it: what the
    ethics committee, entitled to audit every entry, is handed. None for no such index."""
    entry_id = Entry.objects.filter(index=index).values_list("id", flat=True).first()
    if entry_id is None:
        return None
    openings = EntryOpenings.objects.filter(entry_id=entry_id).values_list("openings", flat=True).first()
    if isinstance(openings, str):
        openings = json.loads(openings)
    return receipt_with_openings(entry_receipt(entry_id=entry_id), openings)


def receipt_with_openings(receipt: dict | None, openings: dict | None) -> dict | None:
    """A receipt with the openings its holder may see, which `python -m ledger.verify`
    checks against the leaf's commitments."""
    if receipt is None or not openings:
        return receipt
    return {**receipt, "openings": openings}
