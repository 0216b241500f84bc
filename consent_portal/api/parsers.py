"""JSON bodies refused at the edge when they could hurt: too deep, too big in items, or
holding text the database cannot store.

DRF's JSONParser hands json.loads whatever arrives: a body nested 1,000 deep raised
RecursionError (a 500), a NUL byte or a lone surrogate in a string reached PostgreSQL
(a 500), and a padded array made a request cost seconds. Here every body is parsed once,
then walked once, iteratively, before any view sees it; each refusal is a 400 in the
API's error shape naming where the problem is.
"""

import json
import re

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Defaults, overridable in settings. A bulk check's 10,000 samples are the largest array
# and the largest document the API takes.
MAX_DEPTH = 32
MAX_ITEMS = 10_000
MAX_NODES = 50_000
_TOP_FIELD = re.compile(r"^body\.([^.\[]+)")


class JsonBodyError(ParseError):
    """A refused body; `field` names the top-level member the problem is in, if one is,
    so the answer's "fields" names it as a validation error would."""

    default_code = "parse_error"

    def __init__(self, detail: str, *, path: str = ""):
        super().__init__(detail)
        match = _TOP_FIELD.match(path)
        # A key that is itself the problem (a NUL, a lone surrogate) is not echoed back.
        self.field = match.group(1) if match and not _bad_text(match.group(1)) else None


def _bad_text(text: str) -> str | None:
    """Why this string cannot be stored, or None."""
    if "\x00" in text:
        return "holds a NUL byte (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate (an unpaired \\ud800-\\udfff escape), which is not text"
    return None


def check_shape(value, *, max_depth: int, max_items: int, max_nodes: int, where: str = "body") -> None:
    """Raise JsonBodyError naming the first place `value` is too deep, too long, too big
    or holds text that cannot be stored. Iterative: a deep value cannot exhaust the stack."""
    stack = [(value, where, 1)]
    nodes = 0
    while stack:
        item, path, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise JsonBodyError(f"The JSON body has more than {max_nodes} values; send less at once.")
        if isinstance(item, dict):
            if depth > max_depth:
                raise JsonBodyError(f"The JSON body is nested more than {max_depth} deep (at {path}).", path=path)
            if len(item) > max_items:
                raise JsonBodyError(f"{path} has more than {max_items} members.", path=path)
            for key, child in item.items():
                problem = _bad_text(key)
                if problem:
                    raise JsonBodyError(f"A key of {path} {problem}.", path=f"{path}.{key}")  # not echoed
                stack.append((child, f"{path}.{key}", depth + 1))
        elif isinstance(item, list):
            if depth > max_depth:
                raise JsonBodyError(f"The JSON body is nested more than {max_depth} deep (at {path}).", path=path)
            if len(item) > max_items:
                raise JsonBodyError(f"{path} has {len(item)} items; at most {max_items} are taken.", path=path)
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        elif isinstance(item, str):
            problem = _bad_text(item)
            if problem:
                raise JsonBodyError(f"{path} {problem}.", path=path)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def limits() -> dict:
    return {
        "max_depth": getattr(settings, "API_JSON_MAX_DEPTH", MAX_DEPTH),
        "max_items": getattr(settings, "API_JSON_MAX_ITEMS", MAX_ITEMS),
        "max_nodes": getattr(settings, "API_JSON_MAX_NODES", MAX_NODES),
    }


class SafeJSONParser(JSONParser):
    """JSONParser, refusing bodies that are malformed, too deep, too large in items or
    values, or that hold NUL bytes or lone surrogates (in keys or values)."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        raw = stream.read() if stream is not None else b""
        try:
            text = raw.decode(encoding)
        except (ValueError, LookupError):  # UnicodeError is a ValueError (charset=punycode...)
            raise JsonBodyError(f"The body is not {encoding} text.") from None
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except RecursionError:
            raise JsonBodyError(f"The JSON body is nested more than {limits()['max_depth']} deep.") from None
        except ValueError as exc:
            raise JsonBodyError(f"The body is not JSON: {exc}.") from None
        # A view may set tighter limits of its own (json_limits), where values cost more.
        view = (parser_context or {}).get("view")
        check_shape(data, **{**limits(), **getattr(view, "json_limits", {})})
        return data
