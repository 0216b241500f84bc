"""How the sealed log is stored: entry bundles and hash tiles, as in C2SP tlog-tiles.

Pure Python, no Django. A hash tile (level L, index k) holds the hashes of the complete
subtrees at tree level 8 L numbered 256 k up to 256 k + 255, concatenated: the spec's hash
tile of height 8, byte for byte. A bundle k holds the payloads of entries 256 k up to
256 k + 255 joined by b"\\n", where the spec's entry bundle prefixes each with its length:
canonical JSON never holds a raw newline byte, so the join is unambiguous, and it splits
in one C call where a length prefix needs a Python loop per entry. Only the right edge of
each level has a partial tile or bundle, which grows as entries are sealed: bytes once
written never change. Any stored subtree (level, index) lies inside one tile, from which
at most 127 node hashes recompute it, so a proof reads O(log n / 8) tiles.
"""

import hashlib
from collections.abc import Iterable

from ledger.merkle import HASH_SIZE

HEIGHT = 8
WIDTH = 1 << HEIGHT
TILE_BYTES = WIDTH * HASH_SIZE
SEPARATOR = b"\n"

Tile = tuple[int, int]  # (tile level, tile index)


def locate(level: int, index: int) -> tuple[int, int, int, int]:
    """The subtree (level, index): (tile level, tile index, first hash, hashes to fold)."""
    tile_level, rise = divmod(level, HEIGHT)
    first = index << rise
    return tile_level, first >> HEIGHT, first & (WIDTH - 1), 1 << rise


def tile_levels(data: bytes) -> list[bytes]:
    """A tile's hashes and, level by level above them, the complete subtrees they make:
    levels[r] joins the hashes of the subtrees of 2**r of the tile's hashes, in order (a
    partial tile makes fewer). At most 255 node hashes for a full tile."""
    levels = [data]
    run = [data[i : i + HASH_SIZE] for i in range(0, len(data) - len(data) % HASH_SIZE, HASH_SIZE)]
    sha256 = hashlib.sha256
    while len(run) > 1:
        pairs = iter(run)  # zip(pairs, pairs) takes them two by two, an odd last one left
        run = [sha256(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs, strict=False)]
        levels.append(b"".join(run))
    return levels


def pick(levels: list[bytes], first: int, count: int) -> bytes | None:
    """The subtree over a tile's hashes [first, first + count) from tile_levels, or None
    when the tile holds fewer."""
    rise = count.bit_length() - 1
    if rise >= len(levels):
        return None
    at = (first >> rise) * HASH_SIZE
    found = levels[rise][at : at + HASH_SIZE]
    return found if len(found) == HASH_SIZE else None


def tiles_of(pairs: Iterable[tuple[int, int]]) -> set[Tile]:
    return {locate(level, index)[:2] for level, index in pairs}


def subtrees_from(pairs: Iterable[tuple[int, int]], tiles: dict[Tile, bytes]) -> dict[tuple[int, int], bytes]:
    """The subtrees among pairs that these tiles hold, by (level, index)."""
    found, levels = {}, {}
    for level, index in pairs:
        tile_level, tile_index, first, count = locate(level, index)
        key = (tile_level, tile_index)
        if key not in levels:
            data = tiles.get(key)
            levels[key] = None if data is None else tile_levels(data)
        digest = None if levels[key] is None else pick(levels[key], first, count)
        if digest is not None:
            found[(level, index)] = digest
    return found


def edge(size: int) -> list[Tile]:
    """The partial tile of each level of a tree of size leaves: the ones sealing extends."""
    out, level, nodes = [], 0, size
    while nodes:
        if nodes % WIDTH:
            out.append((level, nodes // WIDTH))
        level, nodes = level + 1, nodes >> HEIGHT
    return out


def split_bundle(data: bytes) -> list[bytes]:
    return data.split(SEPARATOR)


# The largest entry a C2SP entry bundle can carry: its length is a big-endian uint16.
MAX_ENTRY = 0xFFFF


def spec_bundle(payloads: list[bytes]) -> bytes:
    """Payloads as a C2SP tlog-tiles entry bundle: each prefixed with its length."""
    return b"".join(len(p).to_bytes(2, "big") + p for p in payloads)


def tile_path(index: int) -> str:
    """A tile index as C2SP tlog-tiles writes it in paths: 3-digit groups, all but the last
    prefixed with x (1234067: x001/x234/067)."""
    groups = []
    while True:
        index, group = divmod(index, 1000)
        groups.append(f"{group:03d}")
        if not index:
            break
    return "/".join([f"x{g}" for g in reversed(groups[1:])] + [groups[0]])


def tile_index(path: str) -> int:
    """The inverse of tile_path; ValueError for anything tile_path would not write."""
    *upper, last = path.split("/")
    if not all(len(g) == 4 and g[0] == "x" and g[1:].isdigit() for g in upper) or not (
        len(last) == 3 and last.isdigit()
    ):
        raise ValueError(f"{path!r} is not a tile index path")
    index = int("".join(g[1:] for g in upper) + last)
    if tile_path(index) != path:
        raise ValueError(f"{path!r} is not a tile index path")
    return index


def extend_tiles(
    size: int, runs: Iterable[tuple[int, int, list[bytes]]], stored: dict[Tile, bytes]
) -> dict[Tile, bytes]:
    """The tiles to write after appending to a tree of size leaves, whose new complete
    subtrees are runs (level, first index, hashes) as CompactRange.extend returns them;
    stored must hold the tree's partial tiles (edge(size)). Raises ValueError when a
    stored partial tile is not as long as the tree says."""
    out: dict[Tile, bytes] = {}
    for level, first, hashes in runs:
        if level % HEIGHT:
            continue
        tile_level = level // HEIGHT
        tile_index, offset = divmod(first, WIDTH)
        head = stored.get((tile_level, tile_index), b"") if offset else b""
        if len(head) != offset * HASH_SIZE:
            raise ValueError(
                f"hash tile {tile_level}/{tile_index} holds {len(head) // HASH_SIZE} hashes; a tree "
                f"of {size} leaves needs {offset}"
            )
        data = head + b"".join(hashes)
        for start in range(0, len(data), TILE_BYTES):
            out[(tile_level, tile_index + start // TILE_BYTES)] = data[start : start + TILE_BYTES]
    return out


def extend_bundles(size: int, payloads: list[bytes], partial: bytes | None) -> dict[int, bytes]:
    """The bundles to write after appending payloads to a log of size entries; partial is
    the stored bundle size // 256 when size is not a multiple of 256. Raises ValueError
    when that bundle does not hold size % 256 entries, or a payload holds a newline."""
    bundle, offset = divmod(size, WIDTH)
    for payload in payloads:
        if SEPARATOR in payload:
            raise ValueError("a ledger payload holds a raw newline, which canonical JSON never does")
    entries: list[bytes] = []
    if offset:
        held = 0 if partial is None else partial.count(SEPARATOR) + 1
        if held != offset:
            raise ValueError(f"entry bundle {bundle} holds {held} entries; a log of {size} needs {offset}")
        entries.append(partial)
        first_chunk = WIDTH - offset
    else:
        first_chunk = WIDTH
    out = {bundle: SEPARATOR.join(entries + payloads[:first_chunk])}
    for start in range(first_chunk, len(payloads), WIDTH):
        bundle += 1
        out[bundle] = SEPARATOR.join(payloads[start : start + WIDTH])
    return out
