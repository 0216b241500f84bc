"""Names the credentials use: context URLs, our consent vocabulary, published addresses.

Our context (contexts/consent-v1.jsonld) reuses W3C DPV for consent terms and GA4GH DUO for
purposes ("DUO:0000042" expands to http://purl.obolibrary.org/obo/DUO_0000042). Terms of our
own live in the "cpv" namespace CONSENT_VOCABULARY, one fixed IRI for every deployment, so two
portals give the same term the same IRI. It is an identifier only: nothing dereferences it,
and nothing here fetches it. (Before this, "cpv" was each portal's own context URL plus "#";
credentials issued then embed that context inline and still verify, with their old IRIs.)

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

# Our own vocabulary namespace: the same for every deployment, never fetched.
CONSENT_VOCABULARY = "https://w3id.org/biobank-consent/v1#"


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
    """Our context document, {"@context": {...}}: the same on every deployment."""
    return copy.deepcopy(_file("consent-v1.jsonld"))


@functools.cache
def _credential_context_json() -> str:
    return json.dumps([CREDENTIALS_V1, STATUS_LIST_2021_V1, _file("consent-v1.jsonld")["@context"]])


def credential_context() -> list:
    """The @context of every credential we issue, our own context inline (a fresh copy)."""
    return json.loads(_credential_context_json())


# The claim names our context defines for a credential subject: the closed set issued
# credentials use (identity.jsonld.check's fast path accepts only these).
SUBJECT_TERMS = frozenset(
    {
        "biobank",
        "enrolledAt",
        "purpose",
        "purposeLabel",
        "dataUseModifiers",
        "disease",
        "diseaseLabel",
        "study",
        "studyTitle",
        "consentStatus",
    }
)


def status_list_url(purpose: str) -> str:
    if purpose not in STATUS_PURPOSES:
        raise ValueError(f"unknown status purpose {purpose!r}")
    return f"{settings.SITE_URL}{PUBLIC_PREFIX}/status/{purpose}"
