"""StatusList2021 bitstrings (W3C CCG Status List 2021).

A list is 131,072 bits (16 KiB, the spec's minimum, for herd privacy). Index 0 is the most
significant bit of byte 0. encodedList is the GZIP-compressed bitstring, base64url-encoded
without padding.
"""

import base64
import gzip

LIST_BITS = 131072
LIST_BYTES = LIST_BITS // 8


def empty() -> bytes:
    return bytes(LIST_BYTES)


def _position(index: int) -> tuple[int, int]:
    if not isinstance(index, int) or not 0 <= index < LIST_BITS:
        raise ValueError(
            f"status list index must be an integer in 0..{LIST_BITS - 1}, not {index!r}"
        )
    return index // 8, 0x80 >> (index % 8)


def get_bit(bits: bytes, index: int) -> bool:
    byte, mask = _position(index)
    return bool(bits[byte] & mask)


def set_bit(bits: bytes, index: int, value: bool) -> bytes:
    byte, mask = _position(index)
    out = bytearray(bits)
    out[byte] = out[byte] | mask if value else out[byte] & ~mask
    return bytes(out)


def encode(bits: bytes) -> str:
    if len(bits) != LIST_BYTES:
        raise ValueError(f"a status list is {LIST_BYTES} bytes, not {len(bits)}")
    # mtime=0 keeps the encoding a function of the bits alone.
    return base64.urlsafe_b64encode(gzip.compress(bytes(bits), mtime=0)).decode().rstrip("=")


def decode(encoded_list: str) -> bytes:
    if not isinstance(encoded_list, str):
        raise ValueError("encodedList must be a string")
    try:
        bits = gzip.decompress(
            base64.urlsafe_b64decode(encoded_list + "=" * (-len(encoded_list) % 4))
        )
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"encodedList is not base64url GZIP data: {exc}") from None
    if len(bits) < LIST_BYTES:
        raise ValueError(f"a status list has at least {LIST_BITS} bits, this one {len(bits) * 8}")
    return bits
