"""JSON-LD processing with pyld, offline.

The document loader serves the local copies of the contexts we use and refuses every other
URL without fetching it. expand() is strict: a property no context defines (which JSON-LD
would silently drop) or a type or IRI that does not expand to an absolute IRI is an error,
the same documents didkit refuses with "Expansion failed".
"""

import threading

from cachetools import LRUCache
from django.conf import settings
from pyld import jsonld
from pyld.context_resolver import ContextResolver

from identity import vocabulary


class JsonLdError(ValueError):
    """The document is not JSON-LD we accept; the message names the term or URL."""

    def __init__(self, message: str, *, term: str | None = None):
        super().__init__(message)
        self.term = term


class RemoteDocumentRefused(JsonLdError):
    """A context or document URL we hold no local copy of: we never fetch it."""


def document_loader(url: str, options: dict | None = None) -> dict:
    """A pyld document loader over the local copies. Never touches the network."""
    if url in (vocabulary.CREDENTIALS_V1, vocabulary.STATUS_LIST_2021_V1):
        document = vocabulary.w3c_context(url)
    elif url == vocabulary.consent_context_url():
        document = vocabulary.context_document()
    else:
        raise RemoteDocumentRefused(f"refusing to load {url!r}: no local copy, and we never fetch")
    return {
        "contentType": "application/ld+json",
        "contextUrl": None,
        "documentUrl": url,
        "document": document,
    }


# Resolved contexts are cached in caches of our own, so a context some other pyld user
# loaded (perhaps from the network) is never reused here. Per site URL, since our context
# depends on it, and per thread, since the caches are not thread-safe.
_local = threading.local()


def _options(**extra) -> dict:
    caches = _local.__dict__.setdefault("caches", {})
    cache = caches.setdefault(settings.SITE_URL, LRUCache(maxsize=32))
    return {
        "documentLoader": document_loader,
        "contextResolver": ContextResolver(cache, document_loader),
        "base": None,
        **extra,
    }


def _cause(exc: BaseException) -> BaseException:
    """The innermost cause of a pyld error, where our loader's refusal would be."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _pyld(function, *args):
    try:
        return function(*args)
    except jsonld.JsonLdError as exc:
        cause = _cause(exc)
        if isinstance(cause, JsonLdError):
            raise type(cause)(str(cause)) from None
        message = exc.args[0] if exc.args else exc.type
        if cause is not exc and not isinstance(cause, jsonld.JsonLdError):
            message = f"{message} ({cause})"
        elif cause is not exc:
            message = f"{message} ({cause.args[0] if cause.args else cause.type})"
        raise JsonLdError(f"invalid JSON-LD: {message}") from None


def _check_iris(node, path: str) -> None:
    if isinstance(node, list):
        for index, item in enumerate(node):
            _check_iris(item, f"{path}[{index}]")
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "@type" and "@value" not in node:
            for type_ in value if isinstance(value, list) else [value]:
                if not jsonld._is_absolute_iri(type_):
                    raise JsonLdError(f"undefined type {type_!r} at {path}", term=type_)
        elif key == "@id" and not jsonld._is_absolute_iri(value):
            raise JsonLdError(f"{value!r} at {path} is not an absolute IRI")
        elif key != "@value":
            _check_iris(value, f"{path}/{key}")


def expand(document: dict) -> list:
    """The expanded form of the document, offline and strict (see the module docstring)."""
    dropped: list[str | None] = []
    processor = jsonld.JsonLdProcessor(on_property_dropped=dropped.append)
    expanded = _pyld(processor.expand, document, _options())
    if dropped:
        raise JsonLdError(f"undefined term {dropped[0]!r}: no context defines it", term=dropped[0])
    _check_iris(expanded, "")
    return expanded


def canonize(document: dict) -> str:
    """URDNA2015 canonical N-Quads of the document (what Linked Data Proofs sign)."""
    expand(document)
    options = _options(algorithm="URDNA2015", format="application/n-quads")
    return _pyld(jsonld.normalize, document, options)
