"""JSON-LD processing with pyld, offline.

The document loader serves the local copies of the contexts we use and refuses every other
URL without fetching it. expand() is strict: a property no context defines (which JSON-LD
would silently drop) or a type or IRI that does not expand to an absolute IRI is an error,
the same documents didkit refuses with "Expansion failed".
"""

import functools
import json
import re
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


# The strict check for credentials in the shape we issue ------------------------------------
#
# Strict expansion with pyld costs several milliseconds, more than didkit's own signing or
# verification. For a document built from our fixed context and closed claim names, the
# outcome of the strict check depends only on which members it has (an undefined member is
# what JSON-LD drops) and on the values in IRI positions (ids, types, DUO / MONDO terms,
# consentStatus), never on the text of a literal. So _issued_shape() accepts only documents
# whose @context is exactly ours, whose members are among the ones our issuer writes, and whose
# IRI-position values match the patterns our issuer writes (absolute: urn:uuid:, did:key: /
# did:jwk:, http(s):, DUO:/MONDO: through our prefixes, the two consentStatus terms); literals
# must be strings. The first document of each shape (the set of member names) still goes
# through pyld; once one passed, later documents of that shape skip it. Anything else, a
# foreign context, another member, a value of another kind, always gets the full check.

_DID = re.compile(r"^did:(key|jwk):[A-Za-z0-9._%-]+$")
_DID_URL = re.compile(r"^did:(key|jwk):[A-Za-z0-9._%-]+#[A-Za-z0-9._%-]+$")
_HTTP_URL = re.compile(r"^https?://[^\s]+$")
_URN_UUID = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
_DUO = re.compile(r"^DUO:\d{7}$")
_MONDO = re.compile(r"^MONDO:\d{7}$")
_TOP = frozenset(
    {"@context", "id", "type", "issuer", "issuanceDate", "expirationDate", "credentialSubject",
     "credentialStatus", "proof"}
)
_STATUS = frozenset({"id", "type", "statusPurpose", "statusListIndex", "statusListCredential"})
_PROOF = frozenset({"type", "proofPurpose", "verificationMethod", "created", "jws"})
_IRI_CLAIMS = {
    "purpose": lambda v: isinstance(v, str) and bool(_DUO.match(v)),
    "dataUseModifiers": lambda v: isinstance(v, list)
    and all(isinstance(m, str) and _DUO.match(m) for m in v),
    "disease": lambda v: isinstance(v, str) and bool(_MONDO.match(v)),
    "consentStatus": lambda v: v in ("ConsentGiven", "RenewedConsentGiven"),
}


@functools.cache
def _our_context() -> list:
    return json.loads(vocabulary._credential_context_json())


def _matches(pattern: re.Pattern, value) -> bool:
    return isinstance(value, str) and pattern.match(value) is not None


def _issued_shape(document) -> tuple | None:
    """The claim-name shape of a credential in the form we issue, or None if it is not one."""
    if not isinstance(document, dict) or not document.keys() <= _TOP:
        return None
    if document.get("@context") != _our_context():
        return None
    types = document.get("type")
    if not (
        isinstance(types, list)
        and len(types) == 2
        and types[0] == "VerifiableCredential"
        and types[1] in vocabulary.CREDENTIAL_TYPES
    ):
        return None
    if not (
        _matches(_URN_UUID, document.get("id"))
        and _matches(_DID, document.get("issuer"))
        and _matches(_DATETIME, document.get("issuanceDate"))
        and ("expirationDate" not in document or _matches(_DATETIME, document["expirationDate"]))
    ):
        return None
    subject = document.get("credentialSubject")
    if not isinstance(subject, dict) or not _matches(_DID, subject.get("id")):
        return None
    claims = subject.keys() - {"id"}
    if not claims <= vocabulary.SUBJECT_TERMS:
        return None
    for name in claims:
        check = _IRI_CLAIMS.get(name)
        if not (check(subject[name]) if check else isinstance(subject[name], str)):
            return None
    status = document.get("credentialStatus")
    if not (
        isinstance(status, dict)
        and status.keys() == _STATUS
        and status["type"] == "StatusList2021Entry"
        and _matches(_HTTP_URL, status["id"])
        and _matches(_HTTP_URL, status["statusListCredential"])
        and isinstance(status["statusPurpose"], str)
        and isinstance(status["statusListIndex"], str)
    ):
        return None
    proof = document.get("proof")
    if proof is not None and not (
        isinstance(proof, dict)
        and proof.keys() <= _PROOF
        and proof.get("type") == "Ed25519Signature2018"
        and proof.get("proofPurpose") == "assertionMethod"
        and _matches(_DID_URL, proof.get("verificationMethod"))
        and ("created" not in proof or _matches(_DATETIME, proof["created"]))
        and isinstance(proof.get("jws", ""), str)
    ):
        return None
    return (
        tuple(types),
        tuple(sorted(document)),
        tuple(sorted(claims)),
        tuple(sorted(proof)) if isinstance(proof, dict) else None,
    )


_checked_shapes: LRUCache = LRUCache(maxsize=256)
_checked_shapes_lock = threading.Lock()


def check(document: dict) -> None:
    """Raises JsonLdError unless the document passes expand()'s strict check.

    A credential in the shape we issue (see _issued_shape) is expanded with pyld the first
    time its shape is seen and not again; every other document is expanded every time.
    """
    shape = _issued_shape(document)
    if shape is not None:
        with _checked_shapes_lock:
            if shape in _checked_shapes:
                return
    expand(document)
    if shape is not None:
        with _checked_shapes_lock:
            _checked_shapes[shape] = True
