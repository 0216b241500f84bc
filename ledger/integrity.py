"""The integrity check behind ledger_verify, in this process or in parallel worker processes.

The log [0, size) is cut into spans. A span starts at 0, or is a complete subtree (its start
a multiple of its width), so a compact range started empty over the span's leaves computes
the very subtrees the log stores, just numbered from the span's start. A span is verified
alone, page by page: every leaf hash recomputed from the payload bytes and compared with
the stored one, every kind against its payload, every stored subtree inside the span. It
reports, in log order, its problems and, at each checkpoint size inside it, its compact
range there. An assembly joins spans in log order: it folds their subtrees, checks the
stored nodes that join them, each checkpoint's root and signature, and the head.

With one worker the whole log is one span verified here. With more (PostgreSQL only), the
log is cut into complete subtrees of at most MAX_SPAN leaves, worker processes forked from
this one take them one at a time, each over its own connection, and this process assembles
what they send. Either way the report is the same: a worker that meets a missing
entry stops the others' later work, and nothing past the first gap is reported.

On PostgreSQL a page is first proved clean in bulk: the server concatenates the page's
payloads, kinds, stored leaf hashes and each level's stored nodes, and Python compares them
with what it recomputed. Only a page that is not proved clean that way is read row by row,
which names every problem on it exactly as before.
"""

import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import struct
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain

from django.conf import settings
from django.db import connection, connections
from django.db.models import Subquery

from ledger import merkle, note
from ledger.db import raw_cursor
from ledger.models import Checkpoint, Entry, LogKey, TreeNode, TreeState
from ledger.selectors import subtree_hashes

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
    # What to name first: the lowest bad entry if there is one, else the first problem.
    headline: str | None = None
    # Processes that verified the entries (1: this one).
    workers: int = 1

    @property
    def ok(self) -> bool:
        return not self.problems

    def bad(self, message: str, index: int | None = None) -> None:
        self.problems.append(message)
        if index is not None and (self.first_bad_index is None or index < self.first_bad_index):
            self.first_bad_index, self.headline = index, message
        elif self.headline is None:
            self.headline = message


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


def _entry_page(start: int, end: int) -> list[tuple]:
    """Rows (index, kind, payload, leaf_hash) with start <= index < end, in index order.

    (Pre-checking "kind" with PostgreSQL's jsonb was measured: 2.6 us a row on the server,
    against 2.3 us for json.loads here, so the kind is read in Python.)
    """
    index = _qn("index")
    return _fetch(
        f"SELECT {index}, {_qn('kind')}, {_qn('payload')}, {_qn('leaf_hash')} FROM "
        f"{_qn(Entry._meta.db_table)} WHERE {index} >= %s AND {index} < %s ORDER BY {index}",
        [start, end],
    )


def _checkpoint_sizes(start: int, end: int) -> list[int]:
    """Sizes of the checkpoints with start < size <= end, ascending."""
    return list(
        Checkpoint.objects.filter(size__gt=start, size__lte=end)
        .order_by("size")
        .values_list("size", flat=True)
    )


def _stored_nodes(runs: dict[int, tuple[int, list[bytes]]]) -> dict[int, list[tuple]]:
    """The stored (index, hash) rows for these per-level index runs, in one query."""
    where, params = [], []
    for level, (first, hashes) in runs.items():
        where.append(f"({_qn('level')} = %s AND {_qn('index')} >= %s AND {_qn('index')} < %s)")
        params += [level, first, first + len(hashes)]
    sql = (
        f"SELECT {_qn('level')}, {_qn('index')}, {_qn('hash')} FROM "
        f"{_qn(TreeNode._meta.db_table)} WHERE {' OR '.join(where)} "
        f"ORDER BY {_qn('level')}, {_qn('index')}"
    )
    found: dict[int, list[tuple]] = {level: [] for level in runs}
    for level, index, digest in _fetch(sql, params):
        found[level].append((index, digest))
    return found


def _node_problems(runs: dict[int, tuple[int, list[bytes]]]) -> list[str]:
    """Compares recomputed subtrees (per level: first index, hashes) with the stored ones.

    The primary key makes (level, index) unique, so a run is intact when the range holds
    as many rows as the run and their hashes, in index order, equal it.
    """
    if not runs:
        return []
    problems = []
    stored = _stored_nodes(runs)
    for level in sorted(runs):
        first, hashes = runs[level]
        rows = stored[level]
        if len(rows) == len(hashes) and [bytes(h) for _, h in rows] == hashes:
            continue
        by_index = {index: bytes(h) for index, h in rows}
        for offset, digest in enumerate(hashes):
            found = by_index.get(first + offset)
            if found != digest:
                state = "missing" if found is None else "hash mismatch"
                problems.append(f"tree node (level {level}, index {first + offset}): {state}")
    return problems


# -- the kind of an entry --


def kind_ok(payload: bytes, kind: str) -> bool:
    """The definition: the payload's top-level "kind", as json.loads reads it, is the kind."""
    try:
        labelled = json.loads(payload).get("kind")
    except (ValueError, AttributeError):
        labelled = None
    return labelled == kind


# A line of the text _kinds_match builds: "\0", a payload, then the row's kind in quotes.
# The payload must be a JSON object of at most two levels of nesting, strings without
# escapes, integers of at most 100 digits (json.loads refuses longer ones) and no
# whitespace, holding exactly one top-level "kind" member with a string value equal to the
# row's kind (the backreference). Anything else fails the match and is read by json.loads.
_STRING = rb'"[^"]*+"'
_NUMBER = rb"-?(?:0|[1-9][0-9]{0,99})(?:\.[0-9]++)?(?:[eE][+-]?[0-9]++)?"
_SCALAR = rb"(?:" + _STRING + rb"|" + _NUMBER + rb"|true|false|null)"


def _nested(value: bytes) -> bytes:
    array = rb"\[(?:" + value + rb"(?:," + value + rb")*+)?\]"
    obj = rb"\{(?:" + _STRING + rb":" + value + rb"(?:," + _STRING + rb":" + value + rb")*+)?\}"
    return rb"(?:" + _SCALAR + rb"|" + array + rb"|" + obj + rb")"


_MEMBER = rb'"(?!kind")[^"]*+":' + _nested(_nested(_SCALAR))
_KIND_LINES = re.compile(
    rb"(?:\x00\{(?:" + _MEMBER + rb',)*+"kind":"([^"]*+)"(?:,' + _MEMBER + rb')*+\}"\1"\n)++'
)
_CONTROL = bytes(range(32))
_KIND_ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789_.\n"


def _kinds_match(blob: bytes, lines: list[bytes], kinds: bytes) -> bool:
    """True only if kind_ok(payload, kind) holds for every row; False: ask kind_ok.

    blob is b"\\n".join(lines), each line b"\\0" + payload; kinds is the rows' kinds
    joined by b"\\n" (UTF-8). One regular-expression match over all rows checks them, exact
    under these conditions, checked first over the whole page:
    - no backslash: every '"' in a payload delimits a string, and a string's bytes are
      its text (no escapes);
    - no control bytes but the separators: no raw control character inside a string
      (json.loads refuses them) and no payload or kind spans two lines;
    - valid UTF-8 (json.loads decodes it; ASCII separators keep rows apart);
    - kinds of [a-z0-9_.] only: no kind can end or start a string of the pattern, so each
      match of a line covers exactly one row, and the quoted kind after the payload is the
      backreference (a quote-free run between the last two quotes of the line).
    Within a line, the pattern is a subset of JSON whose parse json.loads agrees with: the
    object has exactly one top-level "kind" (other top-level keys are not "kind"; nested
    keys are ignored), its value is the string captured, and it equals the row's kind.
    """
    n = len(lines)
    if b"\\" in blob or len(blob) - len(blob.translate(None, _CONTROL)) != 2 * n - 1:
        return False
    if not blob.isascii():
        try:
            blob.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return False
    if kinds.translate(None, _KIND_ALPHABET) or kinds.count(b"\n") != n - 1:
        return False
    quoted = (b'"' + kinds.replace(b"\n", b'"\n\x00"') + b'"\n').split(b"\x00")
    return _KIND_LINES.fullmatch(b"".join(chain.from_iterable(zip(lines, quoted, strict=False)))) is not None


def kinds_match(payloads: list[bytes], kinds: list[str]) -> bool:
    """_kinds_match over lists: True only if kind_ok holds for every (payload, kind)."""
    if not payloads or len(payloads) != len(kinds):
        return False
    lines = [b"\x00" + p for p in payloads]
    blob = b"\n".join(lines)
    if len(blob.split(b"\n")) != len(lines):
        return False
    return _kinds_match(blob, lines, "\n".join(kinds).encode("utf-8", "surrogatepass"))


# -- PostgreSQL: a page proved clean in bulk --
#
# Rows are read in physical order first (a TID range scan from the page's first row to its
# last, the cheapest read there is): the sequencer writes a batch's entries and nodes in
# log order, so that order usually is log order. Each read also returns its rows' positions
# in the order aggregated, which proves the order (and that no row is missing) or sends the
# page to the next way of reading it: in index order, then row by row.

_orders: dict[str, bytes] = {}


def _entry_codes(n: int) -> bytes:
    """What rows 0 .. n - 1 of a page in order, each with a 32-byte leaf hash, aggregate
    as int4send(index in page << 8 | octet_length(leaf_hash))."""
    cached = _orders.get("entries", b"")
    if len(cached) < 4 * n:
        cached = _orders["entries"] = struct.pack(f">{n}i", *[i << 8 | 32 for i in range(n)])
    return cached[: 4 * n]


def _entries_sql(physical: bool) -> str:
    table, index = _qn(Entry._meta.db_table), _qn("index")
    columns = (
        f"string_agg({_qn('payload')}, '\\x0a00'::bytea), string_agg({_qn('kind')}, E'\\n'), "
        f"string_agg({_qn('leaf_hash')}, ''::bytea), string_agg(int4send("
        f"(({index} - %(first)s)::int4 << 8) | octet_length({_qn('leaf_hash')})), ''::bytea)"
    )
    where = f"{index} >= %(first)s AND {index} < %(end)s"
    if physical:
        return (
            f"SELECT {columns} FROM {table} WHERE "
            f"ctid >= (SELECT ctid FROM {table} WHERE {index} = %(first)s) AND "
            f"ctid <= (SELECT ctid FROM {table} WHERE {index} = %(end)s - 1) AND {where}"
        )
    return (
        f"SELECT {columns} FROM (SELECT {index}, {_qn('kind')}, {_qn('payload')}, "
        f"{_qn('leaf_hash')} FROM {table} WHERE {where} ORDER BY {index}) AS page"
    )


def _page_clean(start: int, end: int) -> list[bytes] | None:
    """The page's leaf hashes if every entry in [start, end) is present and proved to have
    its stored leaf hash and a payload of its kind; None: read the page row by row.

    All aggregates of a read see its rows in one order; the codes prove that order is
    index order with no row missing, and give each stored leaf hash's length. (A length
    of 32 + 256 m would pass for the code of another row, but then the stored hashes
    would not join to 32 bytes a row.)
    """
    n = end - start
    if n >= 1 << 23:
        return None
    expected = _entry_codes(n)
    with raw_cursor() as cursor:
        for physical in (True, False):
            cursor.execute(_entries_sql(physical), {"first": start, "end": end}, binary=True)
            blob, kinds, stored, order = cursor.fetchone()
            if order == expected:
                break
        else:
            return None
    blob = b"\x00" + blob
    lines = blob.split(b"\n")
    if len(lines) != n:
        return None
    sha256 = hashlib.sha256
    leaves = [sha256(line).digest() for line in lines]
    # n hashes of 32 bytes: equal joins mean equal rows.
    if b"".join(leaves) != stored:
        return None
    if not _kinds_match(blob, lines, kinds.encode()):
        # Payloads the pattern does not cover (escapes, whitespace, deep nesting): each
        # kind the slow way, without reading the rows again.
        listed = kinds.split("\n")
        if len(listed) != n or not all(map(kind_ok, [line[1:] for line in lines], listed)):
            return None
    return leaves


def _node_code(level: int, index: int) -> int:
    """level << 26 | index in the page's run at that level << 8 | a hash's 32 bytes."""
    return level << 26 | index << 8 | 32


def _completion(k: int):
    """For a complete subtree of 2**k leaves: its nodes' codes, int4send each, in the
    order the sequencer completes and stores them, a getter of the nodes' hashes in
    that order from their hashes listed level by level, and the number of nodes."""
    key = f"nodes{k}"
    if key not in _orders:
        offsets = [0]
        for level in range(k):
            offsets.append(offsets[-1] + (1 << (k - level)))
        codes, picks = [], []
        for leaf in range(1 << k):
            level, index = 0, leaf
            while True:
                codes.append(_node_code(level, index))
                picks.append(offsets[level] + index)
                if index & 1 == 0 or level == k:
                    break
                level, index = level + 1, index >> 1
        from operator import itemgetter

        _orders[key] = (struct.pack(f">{len(codes)}i", *codes), itemgetter(*picks), len(codes))
    return _orders[key]


def _nodes_physical_sql() -> str:
    table, index, level = _qn(TreeNode._meta.db_table), _qn("index"), _qn("level")
    return (
        f"SELECT string_agg({_qn('hash')}, ''::bytea), string_agg(int4send(({level}::int4 << 26) "
        f"| (({index} - (%(first)s::int8 >> {level}))::int4 << 8) | octet_length({_qn('hash')})), "
        f"''::bytea) FROM {table} WHERE "
        f"ctid >= (SELECT ctid FROM {table} WHERE {level} = 0 AND {index} = %(first)s) AND "
        f"ctid <= (SELECT ctid FROM {table} WHERE {level} = %(top)s AND {index} = %(top_index)s) "
        f"AND {level} <= %(top)s AND {index} >= (%(first)s::int8 >> {level}) "
        f"AND {index} < (%(end)s::int8 >> {level})"
    )


def _nodes_proved_physically(start: int, end: int, runs) -> bool:
    """For a page that is a complete subtree: its nodes and those it completes above it
    (one per level) read in physical order, proved to be the expected ones in the
    sequencer's order and equal to the recomputed ones."""
    width = end - start
    k = width.bit_length() - 1
    if width != 1 << k or start % width or k > 17:
        return False
    top = max(runs)
    if top >= 32:  # codes are int4
        return False
    for level in range(top + 1):
        first, hashes = runs.get(level, (None, ()))
        if level <= k and (first != start >> level or len(hashes) != width >> level):
            return False
        if level > k and (first != (end >> level) - 1 or len(hashes) != 1):
            return False
    order, pick, count = _completion(k)
    carries = top - k
    order += struct.pack(f">{carries}i", *[_node_code(lv, 0) for lv in range(k + 1, top + 1)])
    listed = [h for level in range(top + 1) for h in runs[level][1]]
    expected = b"".join(pick(listed)) if count > 1 else listed[0]
    expected += b"".join(listed[count:])
    with raw_cursor() as cursor:
        cursor.execute(
            _nodes_physical_sql(),
            {"first": start, "end": end, "top": top, "top_index": runs[top][0]},
            binary=True,
        )
        hashes, found_order = cursor.fetchone()
    # The codes prove the rows, their order and (with 32 bytes a node) their lengths.
    return found_order == order and hashes == expected


def _nodes_sql() -> str:
    index, hash_ = _qn("index"), _qn("hash")
    return (
        f"SELECT run.level, agg.hashes, agg.n, agg.whole "
        f"FROM unnest(%s::int2[], %s::int8[], %s::int8[]) AS run (level, first, stop), "
        f"LATERAL (SELECT string_agg(t.{hash_}, ''::bytea ORDER BY t.{index}) AS hashes, "
        f"count(*) AS n, count(*) FILTER (WHERE octet_length(t.{hash_}) = 32) AS whole "
        f"FROM {_qn(TreeNode._meta.db_table)} AS t WHERE t.{_qn('level')} = run.level "
        f"AND t.{index} >= run.first AND t.{index} < run.stop) AS agg"
    )


def _node_problems_bulk(start: int, end: int, runs: dict[int, tuple[int, list[bytes]]]) -> list[str]:
    """_node_problems, proving the page's runs clean in bulk; rows only for the others."""
    if connection.vendor != "postgresql" or not runs:
        return _node_problems(runs)
    if _nodes_proved_physically(start, end, runs):
        return []
    levels = sorted(runs)
    firsts = [runs[level][0] for level in levels]
    stops = [runs[level][0] + len(runs[level][1]) for level in levels]
    with raw_cursor() as cursor:
        cursor.execute(_nodes_sql(), [levels, firsts, stops], binary=True)
        found = {level: (hashes, n, whole) for level, hashes, n, whole in cursor.fetchall()}
    unproved = {}
    for level in levels:
        hashes, n, whole = found.get(level, (None, 0, 0))
        run = runs[level][1]
        if not (n == whole == len(run) and hashes == b"".join(run)):
            unproved[level] = runs[level]
    return _node_problems(unproved)


# -- a span --


def _page_rows(start: int, end: int) -> tuple[list[bytes], list[tuple[int, str, int]]]:
    """Row by row: the leaf hashes of the page's entries up to its first gap, and the
    problems as (offset, message, index), in index order."""
    rows = _entry_page(start, end)
    if not rows or rows[-1][0] != start + len(rows) - 1:
        # Indexes are unique and sorted: the page is whole up to its first gap.
        rows = rows[: next((o for o, r in enumerate(rows) if r[0] != start + o), len(rows))]
    sha256 = hashlib.sha256
    leaves, problems = [], []
    for offset, (index, kind, payload, stored_leaf) in enumerate(rows):
        payload = bytes(payload)
        leaf = sha256(b"\x00" + payload).digest()
        leaves.append(leaf)
        if stored_leaf is None or bytes(stored_leaf) != leaf:
            problems.append((offset, f"entry {index}: leaf hash mismatch", index))
        if not kind_ok(payload, kind):
            problems.append((offset, f"entry {index}: kind {kind!r} does not match the payload", index))
    return leaves, problems


def verify_span(start: int, end: int, chunk_size: int, emit: Callable[[list], None]) -> None:
    """Verifies entries [start, end) of a span (see the module docstring) page by page,
    calling emit with each page's events, in log order:

    ("bad", message, index or None)  a problem
    ("checkpoint", size, hashes)     the span's compact-range hashes at a checkpoint size
    ("page", done)                   a whole page verified: done leaves of the span so far
    ("end", done, frontier, nodes)   the last event: leaves verified (fewer than the span
                                     at a gap), the span's (level, hash) subtrees, nodes
    """
    fast = connection.vendor == "postgresql"
    tree = merkle.CompactRange()
    nodes = 0
    length = end - start
    while tree.size < length:
        page_start = start + tree.size
        page_end = min(page_start + chunk_size, end)
        events: list = []
        leaves = _page_clean(page_start, page_end) if fast else None
        problems: list = []
        if leaves is None:
            leaves, problems = _page_rows(page_start, page_end)
        if not leaves:
            emit(events)
            break
        sizes = _checkpoint_sizes(page_start, page_start + len(leaves))
        runs: dict[int, tuple[int, list[bytes]]] = {}
        position, p = 0, 0
        while position < len(leaves):
            # Up to the next checkpoint inside the page, so its root can be taken there.
            stop = len(leaves)
            if sizes and sizes[0] - page_start < stop:
                stop = sizes[0] - page_start
            while p < len(problems) and problems[p][0] < stop:
                events.append(("bad", problems[p][1], problems[p][2]))
                p += 1
            for level, first, hashes in tree.extend(leaves[position:stop]):
                if level in runs:
                    runs[level][1].extend(hashes)
                else:
                    runs[level] = (first + (start >> level), hashes)
            while sizes and sizes[0] == start + tree.size:
                events.append(("checkpoint", sizes.pop(0), [h for _, h in tree.frontier()]))
            position = stop
        nodes += sum(len(hashes) for _, hashes in runs.values())
        events += [
            ("bad", problem, None)
            for problem in _node_problems_bulk(page_start, page_start + len(leaves), runs)
        ]
        whole = len(leaves) == page_end - page_start
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
            self.report.bad(event[1], event[2])
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
        if self.joins:
            stored = subtree_hashes(pairs=[(level, index) for level, index, _ in self.joins])
            for level, index, digest in self.joins:
                found = stored.get((level, index))
                if found != digest:
                    state = "missing" if found is None else "hash mismatch"
                    report.bad(f"tree node (level {level}, index {index}): {state}")
            report.nodes += len(self.joins)
        report.entries = self.done
        if self.gap is not None or self.done < self.size:
            # The checkpoints past a gap cannot be recomputed; the gap is the finding.
            report.bad(f"entry {self.done}: missing", self.done)
        elif merkle.fold([h for _, h in self.stack]) != bytes(head_root):
            report.bad(f"tree state: root does not match the {self.size} entries")


def _verify_checkpoint(row, computed_root: bytes | None, verifiers, report: VerifyReport) -> None:
    size, root, text = row[0], bytes(row[1]), row[2]
    report.checkpoints += 1
    try:
        signed = note.open_checkpoint(text, verifiers)
    except note.NoteError as exc:
        report.bad(f"checkpoint {size}: {exc}")
        return
    if signed != (settings.LEDGER_ORIGIN, size, root):
        report.bad(f"checkpoint {size}: signed note does not match the stored origin, size or root")
    if computed_root is None:
        report.bad(f"checkpoint {size}: the log has no tree of that size")
    elif computed_root != root:
        report.bad(f"checkpoint {size}: root hash does not match the entries")


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
