"""The one byte encoding of ledger payloads: sorted keys, no spaces, UTF-8, no floats.

Pure Python, no Django. Floats are refused because their text form differs between
encoders, and integers beyond 2**53 - 1 because JavaScript and many JSON parsers round
them: either would make the same payload hash differently elsewhere.
"""

import json

MAX_SAFE_INTEGER = 2**53 - 1


def _check(value, path: str) -> None:
    if value is None or isinstance(value, (bool, str)):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{path}: string is not valid Unicode") from None
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError(f"{path}: integer {value} is beyond ±(2**53 - 1)")
        return
    if isinstance(value, float):
        raise ValueError(f"{path}: floats are not allowed in ledger payloads")
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: key {key!r} is not a string")
            _check(key, f"{path}.{key}")
            _check(item, f"{path}.{key}")
        return
    raise ValueError(f"{path}: {type(value).__name__} is not a JSON type")


def canonical_json(obj) -> bytes:
    _check(obj, "payload")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
