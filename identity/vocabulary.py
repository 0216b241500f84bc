"""Names the credentials use: context URLs, our consent vocabulary, published addresses.

Our context (contexts/consent-v1.jsonld) reuses W3C DPV for consent terms and GA4GH DUO for
purposes ("DUO:0000042" expands to http://purl.obolibrary.org/obo/DUO_0000042). Terms of our
own live in the "cpv" namespace, which is the published context's own URL plus "#", so every
term IRI dereferences to the document that defines it. That URL depends on SITE_URL, so the
file leaves "cpv" out and context_document() adds it.

Every credential embeds the context inline: didkit 0.3.3 only knows its built-in contexts
and offline verifiers need no network. The same document is published at
consent_context_url() for people and tools that want to read it.
"""

import copy
import functools
import json
from pathlib import Path

from django.conf import settings

CONTEXTS_DIR = Path(__file__).resolve().parent / "contexts"

CREDENTIALS_V1 = "https://www.w3.org/2018/credentials/v1"
STATUS_LIST_2021_V1 = "https://w3id.org/vc/status-list/2021/v1"

ENROLMENT_CREDENTIAL = "EnrolmentCredential"
CONSENT_CREDENTIAL = "ConsentCredential"
CREDENTIAL_TYPES = (ENROLMENT_CREDENTIAL, CONSENT_CREDENTIAL)

REVOCATION = "revocation"
SUSPENSION = "suspension"
STATUS_PURPOSES = (REVOCATION, SUSPENSION)

# The path the project mounts identity.urls under; the public addresses below live there.
PUBLIC_PREFIX = "/credentials"


@functools.cache
def _file(name: str) -> dict:
    return json.loads((CONTEXTS_DIR / name).read_text())


def w3c_context(url: str) -> dict:
    """A local copy of a W3C context didkit has built in (see contexts/README.md)."""
    name = {
        CREDENTIALS_V1: "credentials-v1.jsonld",
        STATUS_LIST_2021_V1: "status-list-2021-v1.jsonld",
    }[url]
    return copy.deepcopy(_file(name))


def consent_context_url() -> str:
    return f"{settings.SITE_URL}{PUBLIC_PREFIX}/contexts/consent/v1"


def context_document() -> dict:
    """Our context document, {"@context": {...}}, with the cpv namespace for this site."""
    definitions = copy.deepcopy(_file("consent-v1.jsonld")["@context"])
    head = {key: definitions.pop(key) for key in ("@version", "@protected")}
    return {"@context": {**head, "cpv": consent_context_url() + "#", **definitions}}


def credential_context() -> list:
    """The @context of every credential we issue, our own context inline."""
    return [CREDENTIALS_V1, STATUS_LIST_2021_V1, context_document()["@context"]]


def status_list_url(purpose: str) -> str:
    if purpose not in STATUS_PURPOSES:
        raise ValueError(f"unknown status purpose {purpose!r}")
    return f"{settings.SITE_URL}{PUBLIC_PREFIX}/status/{purpose}"
