"""The integrity check behind ledger_verify, in this process or in parallel worker processes.

The log [0, size) is cut into spans. A span starts at 0, or is a complete subtree (its start
a multiple of its width), so a compact range started empty over the span's leaves computes
the very subtrees the log stores, just numbered from the span's start. A span is verified
alone, page by page: every leaf hash recomputed from the payload bytes in the entry
bundles and compared with the level-0 hash tiles, every subtree at levels 8, 16, ...
inside the span compared with its hash tile, and every index's Entry row (the identity
the portal's records point at) compared with its leaf: there must be one, and its
leaf_hash must be the leaf's, so a row deleted, moved to another index (two rows' indexes
swapped) or altered is named by the index. It reports, in log order, its problems and,
at each checkpoint size inside it, its compact range there. An assembly joins spans in log
order: it folds their subtrees, checks the stored ones that join them, each checkpoint's
root and signature, and the head.

A page costs three queries, whatever its length: its bundles (256 entries a row), its
hash tiles (256 hashes a row) and its entry rows' leaf hashes, a range of the unique index
on Entry.index (on PostgreSQL counted and joined by the database: one row back, not one
per entry); each is compared with what was recomputed as joined bytes, and only a page
that differs is compared hash by hash (its entry rows then read again, one by one), to
name every bad entry, row and node.

With one worker the whole log is one span verified here. With more (PostgreSQL only), the
log is cut into complete subtrees of at most MAX_SPAN leaves, worker processes forked from
this one take them one at a time, each over its own connection, and this process assembles
what they send. Either way the report is the same: a worker that meets a missing
entry stops the others' later work, and nothing past the first gap is reported.
"""

import hashlib
import multiprocessing
import multiprocessing.connection
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, connections
from django.db.models import Subquery

from ledger import merkle, note, tiles
from ledger.db import raw_cursor
from ledger.models import Checkpoint, Entry, EntryBundle, HashTile, LogKey, TreeState
from ledger.selectors import hash_tiles

HASH = merkle.HASH_SIZE

# Entries per page: one bulk read, one bulk node check.
DEFAULT_CHUNK_SIZE = 16384
# Below this many entries the default is one worker: forking and connecting costs more.
PARALLEL_MIN_ENTRIES = 32768
# Spans handed to workers hold at most this many leaves (a power of two), fewer for small
# logs so that each worker gets several and none waits long for the last one.
MAX_SPAN = 1 << 16
MIN_SPAN = 1 << 12

Progress = Callable[[int, int], None]


@dataclass
class VerifyReport:
    entries: int = 0
    checkpoints: int = 0
    nodes: int = 0
    pending: int = 0
    first_bad_index: int | None = None
    problems: list[str] = field(default_factory=list)
    # What to name first: the lowest bad entry if there is one, else the problem found
    # lowest in the log (the same however the log was cut into spans).
    headline: str | None = None
    # Processes that verified the entries (1: this one).
    workers: int = 1
    headline_at: int | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def bad(self, message: str, index: int | None = None, at: int | None = None) -> None:
        """A problem; index: the bad entry it names; at: the last leaf it depends on (a
        stored subtree's, a checkpoint's), for problems with no entry to name."""
        self.problems.append(message)
        if index is not None and (self.first_bad_index is None or index < self.first_bad_index):
            self.first_bad_index, self.headline, self.headline_at = index, message, index
        elif self.first_bad_index is None and (
            self.headline is None
            or (at is not None and (self.headline_at is None or at < self.headline_at))
        ):
            self.headline, self.headline_at = message, at


# -- reading --


def _fetch(sql: str, params: list) -> list[tuple]:
    """All rows of one query; on PostgreSQL through a binary, server-bound psycopg cursor
    (bytea arrive as bytes, no ORM rows), elsewhere through Django's cursor."""
    if connection.vendor == "postgresql":
        with raw_cursor() as cursor:
            cursor.execute(sql, params, binary=True)
            return cursor.fetchall()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _qn(name: str) -> str:
    return connection.ops.quote_name(name)


def _checkpoint_sizes(start: int, end: int) -> list[int]:
    """Sizes of the checkpoints with start < size <= end, ascending."""
    return list(
        Checkpoint.objects.filter(size__gt=start, size__lte=end)
        .order_by("size")
        .values_list("size", flat=True)
    )


def _bundles(first: int, last: int) -> dict[int, bytes]:
    """The stored bundles first .. last, by index."""
    index = _qn("index")
    rows = _fetch(
        f"SELECT {index}, {_qn('data')} FROM {_qn(EntryBundle._meta.db_table)} "
        f"WHERE {index} >= %s AND {index} <= %s",
        [first, last],
    )
    return {number: bytes(data) for number, data in rows}


def _entry_rows(start: int, end: int) -> list[tuple[int, int, bytes | None]]:
    """(index, id, leaf_hash) of the entry rows holding the indexes [start, end), in
    index order: one range of the unique index on Entry.index."""
    index = _qn("index")
    return _fetch(
        f"SELECT {index}, {_qn('id')}, {_qn('leaf_hash')} FROM {_qn(Entry._meta.db_table)} "
        f"WHERE {index} >= %s AND {index} < %s ORDER BY {index}",
        [start, end],
    )


def _entry_rows_agree(start: int, end: int, joined: bytes) -> bool:
    """PostgreSQL: whether the entry rows [start, end) are all there and hold the leaf
    hashes `joined`, in index order: the same range as _entry_rows, counted and joined by
    the database, so one row comes back rather than one per entry (building those rows
    here cost more than the database's work). A page for which this does not hold (or
    the database joined out of order) is then read row by row."""
    index = _qn("index")
    (count, hashes), = _fetch(
        f"SELECT count(*) FILTER (WHERE octet_length(r.h) = {HASH}), string_agg(r.h, ''::bytea) "
        f"FROM (SELECT {_qn('leaf_hash')} AS h FROM {_qn(Entry._meta.db_table)} "
        f"WHERE {index} >= %s AND {index} < %s ORDER BY {index}) AS r",
        [start, end],
    )
    return count == end - start and hashes is not None and bytes(hashes) == joined


def _tiles(start: int, end: int) -> dict[tiles.Tile, bytes]:
    """The stored hash tiles holding the leaves [start, end) and the subtrees at levels
    8, 16, ... that end inside that range: one range of tiles a level, in one query."""
    where, params = [], []
    level = 0
    while end >> (tiles.HEIGHT * level):
        shift = tiles.HEIGHT * level
        first, last = (start >> shift) >> tiles.HEIGHT, ((end - 1) >> shift) >> tiles.HEIGHT
        where.append(f"({_qn('level')} = %s AND {_qn('index')} >= %s AND {_qn('index')} <= %s)")
        params += [level, first, last]
        level += 1
    rows = _fetch(
        f"SELECT {_qn('level')}, {_qn('index')}, {_qn('hashes')} FROM "
        f"{_qn(HashTile._meta.db_table)} WHERE {' OR '.join(where)}",
        params,
    )
    return {(lv, number): bytes(data) for lv, number, data in rows}


def _stored_run(stored: dict[tiles.Tile, bytes], tile_level: int, first: int, count: int) -> bytes:
    """The stored hashes first .. first + count - 1 of a tile level, joined, as far as the
    tiles hold them (shorter when one is missing or short)."""
    out = []
    end = first + count
    while first < end:
        number, offset = divmod(first, tiles.WIDTH)
        take = min(end - first, tiles.WIDTH - offset)
        piece = stored.get((tile_level, number), b"")[offset * HASH : (offset + take) * HASH]
        out.append(piece)
        if len(piece) < take * HASH:
            break
        first += take
    return b"".join(out)


def _run_problems(
    stored: dict[tiles.Tile, bytes], level: int, first: int, hashes: list[bytes],
    joined: bytes | None = None,
) -> list[tuple[int, str]]:
    """Recomputed hashes of tree level `level` (a multiple of 8) from index first (joined:
    the same, joined, when the caller has them), against the stored ones: (index,
    "missing" or "mismatch") for each that differs, in order."""
    tile_level = level // tiles.HEIGHT
    found = _stored_run(stored, tile_level, first, len(hashes))
    if found == (b"".join(hashes) if joined is None else joined):
        return []
    problems = []
    for offset, digest in enumerate(hashes):
        piece = found[offset * HASH : (offset + 1) * HASH]
        if piece != digest:
            problems.append((first + offset, "missing" if len(piece) < HASH else "mismatch"))
    return problems


def _row_problems(
    stored: dict[tiles.Tile, bytes], start: int, leaves: list[bytes],
    rows: list[tuple[int, int, bytes | None]],
) -> list[tuple]:
    """The entry rows (_entry_rows) of the leaves [start, start + len(leaves)) against
    those leaves, as problems (offset, message, index, at): an index without a row, a row
    without a leaf hash, a row whose leaf hash is not the leaf's. A leaf whose stored hash
    differs from the recomputed one is named already; its row is named too only when it
    matches neither."""
    if len(rows) == len(leaves) and [
            None if row[2] is None else bytes(row[2]) for row in rows] == leaves:
        return []
    held = {index: (entry_id, None if digest is None else bytes(digest))
            for index, entry_id, digest in rows}
    stored_run = _stored_run(stored, 0, start, len(leaves))
    problems = []
    for offset, leaf in enumerate(leaves):
        index = start + offset
        if index not in held:
            problems.append((offset, f"entry {index}: its entry row is missing", index, index))
            continue
        entry_id, digest = held[index]
        if digest is None:
            problems.append((offset, f"entry {index}: its entry row (id {entry_id}) has no "
                                     "leaf hash", index, index))
            continue
        if digest != leaf and digest != stored_run[offset * HASH : (offset + 1) * HASH]:
            problems.append((offset, f"entry {index}: its entry row (id {entry_id}) does not "
                                     "match the leaf", index, index))
    return problems


# -- a span --


def _page_leaves(start: int, end: int) -> tuple[list[bytes], list[tuple]]:
    """The leaf hashes of entries [start, end), recomputed from their bundles, up to the
    first entry missing, and the problems with the bundles as (offset, message, index,
    at): see verify_span's events."""
    first, last = start // tiles.WIDTH, (end - 1) // tiles.WIDTH
    stored = _bundles(first, last)
    lines: list[bytes] = []
    problems = []
    for number in range(first, last + 1):
        base = number * tiles.WIDTH
        lo, hi = max(start, base) - base, min(end, base + tiles.WIDTH) - base
        data = stored.get(number)
        if data is None:
            break
        # Each payload with the leaf prefix in front, ready to hash (RFC 9162 §2.1.1).
        held = (b"\x00" + data.replace(tiles.SEPARATOR, b"\n\x00")).split(tiles.SEPARATOR)
        if len(held) > tiles.WIDTH and lo == 0:  # named once, by the page it starts in
            problems.append((len(lines), f"entry bundle {number}: holds {len(held)} entries, more "
                                         f"than {tiles.WIDTH}", None, base))
        got = held[lo:hi]
        lines += got
        if len(got) < hi - lo:
            break
    sha256 = hashlib.sha256
    return [sha256(line).digest() for line in lines], problems


def verify_span(start: int, end: int, chunk_size: int, emit: Callable[[list], None]) -> None:
    """Verifies entries [start, end) of a span (see the module docstring) page by page,
    calling emit with each page's events, in log order:

    ("bad", message, index, at)      a problem: the bad entry's index or None, and the
                                     last leaf it depends on (VerifyReport.bad)
    ("checkpoint", size, hashes)     the span's compact-range hashes at a checkpoint size
    ("page", done)                   a whole page verified: done leaves of the span so far
    ("end", done, frontier, nodes)   the last event: leaves verified (fewer than the span
                                     at a gap), the span's (level, hash) subtrees, stored
                                     hashes checked
    """
    tree = merkle.CompactRange()
    nodes = 0
    length = end - start
    while tree.size < length:
        page_start = start + tree.size
        page_end = min(page_start + chunk_size, end)
        events: list = []
        leaves, problems = _page_leaves(page_start, page_end)
        if not leaves:
            emit(events)
            break
        page_end = page_start + len(leaves)
        stored = _tiles(page_start, page_end)
        joined = b"".join(leaves)
        problems += [
            (index - page_start, f"entry {index}: leaf hash {state}", index, index)
            for index, state in _run_problems(stored, 0, page_start, leaves, joined)
        ]
        if connection.vendor != "postgresql" or not _entry_rows_agree(
                page_start, page_end, joined):
            rows = _entry_rows(page_start, page_end)
            problems += _row_problems(stored, page_start, leaves, rows)
        problems.sort(key=lambda problem: problem[0])
        nodes += len(leaves)
        sizes = _checkpoint_sizes(page_start, page_end)
        runs: dict[int, tuple[int, list[bytes]]] = {}
        position, p = 0, 0
        while position < len(leaves):
            # Up to the next checkpoint inside the page, so its root can be taken there.
            stop = len(leaves)
            if sizes and sizes[0] - page_start < stop:
                stop = sizes[0] - page_start
            while p < len(problems) and problems[p][0] < stop:
                events.append(("bad", *problems[p][1:]))
                p += 1
            for level, first, hashes in tree.extend(leaves[position:stop]):
                if level == 0 or level % tiles.HEIGHT:
                    continue  # leaves are checked above; other levels are not stored
                if level in runs:
                    runs[level][1].extend(hashes)
                else:
                    runs[level] = (first + (start >> level), hashes)
            while sizes and sizes[0] == start + tree.size:
                events.append(("checkpoint", sizes.pop(0), [h for _, h in tree.frontier()]))
            position = stop
        events += [("bad", *problem[1:]) for problem in problems[p:]]
        for level, (first, hashes) in sorted(runs.items()):
            nodes += len(hashes)
            events += [
                ("bad", f"tree node (level {level}, index {index}): "
                        f"{'missing' if state == 'missing' else 'hash mismatch'}", None,
                 ((index + 1) << level) - 1)
                for index, state in _run_problems(stored, level, first, hashes)
            ]
        whole = page_end == min(page_start + chunk_size, end)
        if whole:
            events.append(("page", tree.size))
        emit(events)
        if not whole:
            break
    emit([("end", tree.size, tree.frontier(), nodes)])


# -- joining spans --


class _Assembly:
    """Takes spans' events in log order: folds the spans' subtrees into the log's compact
    range, checks checkpoints and the stored nodes that join spans."""

    def __init__(self, report: VerifyReport, size: int):
        self.report = report
        self.size = size
        self.stack: list[tuple[int, bytes]] = []  # (level, hash), largest first
        self.done = 0  # leaves verified, from 0
        self.joins: list[tuple[int, int, bytes]] = []
        self.gap: int | None = None
        self.verifiers = [
            note.verifier_key(k.name, bytes(k.public_key)) for k in LogKey.objects.all()
        ]
        self.checkpoints = (
            Checkpoint.objects.filter(size__lte=size)
            .order_by("size")
            .values_list("size", "root_hash", "note")
            .iterator(chunk_size=500)
        )
        self.next_checkpoint = next(self.checkpoints, None)
        # The empty tree, and sizes no tree has.
        while self.next_checkpoint is not None and self.next_checkpoint[0] <= 0:
            root = merkle.EMPTY_ROOT if self.next_checkpoint[0] == 0 else None
            self._checkpoint(root)

    def _checkpoint(self, root: bytes | None) -> None:
        _verify_checkpoint(self.next_checkpoint, root, self.verifiers, self.report)
        self.next_checkpoint = next(self.checkpoints, None)

    def event(self, span_start: int, span_end: int, event: tuple) -> None:
        what = event[0]
        if what == "bad":
            self.report.bad(event[1], event[2], event[3])
        elif what == "checkpoint":
            size, hashes = event[1], event[2]
            while self.next_checkpoint is not None and self.next_checkpoint[0] < size:
                self._checkpoint(None)  # only if checkpoints changed while verifying
            if self.next_checkpoint is not None and self.next_checkpoint[0] == size:
                self._checkpoint(merkle.fold([h for _, h in self.stack] + hashes))
        elif what == "end":
            done, frontier, nodes = event[1], event[2], event[3]
            self.report.nodes += nodes
            self.done = span_start + done
            if span_start + done < span_end:
                self.gap = span_start + done
                return
            position = span_start
            for level, digest in frontier:
                position += 1 << level
                self._push(level, digest, position)

    def _push(self, level: int, digest: bytes, end: int) -> None:
        """Adds a complete subtree ending at leaf end; equal neighbours join (binary carry)."""
        stack = self.stack
        stack.append((level, digest))
        while len(stack) > 1 and stack[-1][0] == stack[-2][0]:
            level, right = stack.pop()
            _, left = stack.pop()
            joined = merkle.node_hash(left, right)
            stack.append((level + 1, joined))
            self.joins.append((level + 1, (end >> (level + 1)) - 1, joined))

    def finish(self, head_root: bytes) -> None:
        report = self.report
        # Joins at levels 8, 16, ... are stored; the others are only recomputed.
        joins = [join for join in self.joins if join[0] % tiles.HEIGHT == 0]
        if joins:
            # Read from the database, never from the proofs' remembered tiles.
            pairs = [(level, index) for level, index, _ in joins]
            stored = tiles.subtrees_from(pairs, hash_tiles(keys=tiles.tiles_of(pairs)))
            for level, index, digest in joins:
                found = stored.get((level, index))
                if found != digest:
                    state = "missing" if found is None else "hash mismatch"
                    report.bad(f"tree node (level {level}, index {index}): {state}",
                               at=((index + 1) << level) - 1)
            report.nodes += len(joins)
        report.entries = self.done
        if self.gap is not None or self.done < self.size:
            # The checkpoints past a gap cannot be recomputed; the gap is the finding.
            report.bad(f"entry {self.done}: missing", self.done)
        elif merkle.fold([h for _, h in self.stack]) != bytes(head_root):
            report.bad(f"tree state: root does not match the {self.size} entries", at=self.size)


def _verify_checkpoint(row, computed_root: bytes | None, verifiers, report: VerifyReport) -> None:
    size, root, text = row[0], bytes(row[1]), row[2]
    report.checkpoints += 1
    try:
        signed = note.open_checkpoint(text, verifiers)
    except note.NoteError as exc:
        report.bad(f"checkpoint {size}: {exc}", at=size - 1)
        return
    if signed != (settings.LEDGER_ORIGIN, size, root):
        report.bad(f"checkpoint {size}: signed note does not match the stored origin, size or root",
                   at=size - 1)
    if computed_root is None:
        report.bad(f"checkpoint {size}: the log has no tree of that size", at=size - 1)
    elif computed_root != root:
        report.bad(f"checkpoint {size}: root hash does not match the entries", at=size - 1)


# -- the whole log --


def spans(size: int, workers: int) -> list[tuple[int, int]]:
    """[0, size) as complete subtrees of at most one span's width, in log order."""
    width = MAX_SPAN
    while width > MIN_SPAN and size < width * workers * 4:
        width >>= 1
    out = []
    for level, i in merkle.subtrees(0, size):
        first, step = i << level, min(1 << level, width)
        out += [(s, s + step) for s in range(first, first + (1 << level), step)]
    return out


def default_workers(size: int) -> int:
    """os.cpu_count() workers, or one for a log too small to be worth forking for."""
    return (os.cpu_count() or 1) if size >= PARALLEL_MIN_ENTRIES else 1


def verify_log(
    *, progress: Progress | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
) -> VerifyReport:
    """See services.ledger_verify."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if workers is not None and workers < 1:
        raise ValueError("workers must be at least 1")
    report = VerifyReport()
    # One statement, one snapshot: the sequencer writes the head and its checkpoint together.
    latest = Checkpoint.objects.order_by("-size").values("size")[:1]
    head = (
        TreeState.objects.filter(id=1)
        .annotate(latest=Subquery(latest))
        .values_list("size", "root_hash", "latest")
        .first()
    )
    if head is None:
        if Entry.objects.filter(index__isnull=False).exists():
            report.bad("tree state: missing while entries are sealed")
        head = (0, merkle.EMPTY_ROOT, None)
    size, head_root, latest_size = head
    if size and latest_size != size:
        report.bad(f"tree state: size {size}, but the latest checkpoint is for {latest_size}")
    if workers is None:
        workers = default_workers(size)
    # Workers are forked from this process and read committed rows of a PostgreSQL database
    # over their own connections.
    if (
        connection.vendor != "postgresql"
        or connection.in_atomic_block
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        workers = 1
    work = spans(size, workers) if workers > 1 else []
    report.workers = min(workers, len(work)) if len(work) > 1 else 1
    if report.workers > 1:
        assembly = _verify_parallel(report, size, work, chunk_size, progress)
    else:
        assembly = _verify_here(report, size, chunk_size, progress)
    assembly.finish(head_root)
    report.pending = Entry.objects.filter(index__isnull=True).count()
    return report


def _verify_here(report, size, chunk_size, progress) -> _Assembly:
    """The whole log as one span, in this process, over this connection."""
    assembly = _Assembly(report, size)

    def emit(events):
        for event in events:
            assembly.event(0, size, event)
            if event[0] == "page" and progress and (event[1] % chunk_size == 0 or event[1] == size):
                progress(event[1], size)

    if size:
        verify_span(0, size, chunk_size, emit)
    return assembly


def _worker(work, chunk_size, taken, stop, send) -> None:
    """A forked worker: verifies spans one at a time until none is left, sending
    (span number, events) for each page, then None (or ("error", traceback))."""
    try:
        while True:
            with taken.get_lock():
                number = taken.value
                taken.value += 1
            if number >= len(work) or number > stop.value:
                break
            start, end = work[number]
            ended = []

            def emit(events, number=number, ended=ended):
                send.send((number, events))
                ended += [e[1] for e in events if e[0] == "end"]

            verify_span(start, end, chunk_size, emit)
            if ended[0] < end - start:
                # Nothing past a gap is reported: later spans need no work.
                with stop.get_lock():
                    stop.value = min(stop.value, number)
        send.send(None)
    except BaseException:  # noqa: BLE001 (reported to the parent, which raises)
        try:
            send.send(("error", traceback.format_exc()))
        except OSError:
            pass
    finally:
        connections.close_all()
        send.close()


def _verify_parallel(report, size, work, chunk_size, progress) -> _Assembly:
    """report.workers forked processes take spans in turn; this one joins them in order."""
    context = multiprocessing.get_context("fork")
    taken = context.Value("q", 0)
    stop = context.Value("q", len(work))
    # A forked child must not share this process's database socket: close it, every
    # process opens its own.
    connections.close_all()
    processes, readers = [], []
    finished = False
    try:
        for _ in range(report.workers):
            reader, writer = context.Pipe(duplex=False)
            process = context.Process(
                target=_worker, args=(work, chunk_size, taken, stop, writer), daemon=True
            )
            process.start()
            writer.close()
            processes.append(process)
            readers.append(reader)
        assembly = _Assembly(report, size)
        arrived: dict[int, list] = {}  # events of spans not yet joined, by span number
        pages: dict[int, int] = {}  # leaves done per span, for progress
        current, failure = 0, None
        alive = list(readers)
        while alive:
            for reader in multiprocessing.connection.wait(alive):
                try:
                    message = reader.recv()
                except EOFError:
                    message = None
                if message is None:
                    alive.remove(reader)
                elif message[0] == "error":
                    failure = failure or message[1]
                else:
                    number, events = message
                    arrived.setdefault(number, []).extend(events)
                    for event in events:
                        if event[0] == "page":
                            pages[number] = event[1]
                            if progress and assembly.gap is None:
                                progress(sum(pages.values()), size)
            # Join spans in log order as far as their events have arrived.
            while current in arrived and assembly.gap is None and failure is None:
                start, end = work[current]
                events = arrived.pop(current)
                for event in events:
                    assembly.event(start, end, event)
                if not events or events[-1][0] != "end":
                    arrived[current] = []
                    break
                current += 1
        if failure:
            raise RuntimeError(f"a verification worker failed:\n{failure}")
        if assembly.gap is None and current < len(work):
            # A worker died without a word (killed?): its spans were never verified.
            codes = [process.exitcode for process in processes]
            raise RuntimeError(f"verification workers ended early (exit codes {codes})")
        finished = True
        return assembly
    finally:
        for process in processes:
            if not finished:
                process.terminate()
            process.join()
