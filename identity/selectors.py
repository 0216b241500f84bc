"""Reads: credential status, published status lists, DID documents, verification."""

import hashlib
import json
import threading
from datetime import datetime

from cachetools import LRUCache
from django.db.models import QuerySet
from django.utils import timezone

from identity import didkit_backend, jsonld, statuslist, vocabulary
from identity.didkit_backend import CredentialError
from identity.models import IssuedCredential, IssuerKey, StatusList


def trusted_issuer_dids() -> set[str]:
    """Every issuer key the portal has had, active or rotated out."""
    return set(IssuerKey.objects.values_list("did", flat=True))


def _list_bits(purpose: str) -> bytes:
    bits = (
        StatusList.objects.filter(purpose=purpose, number=1).values_list("bits", flat=True).first()
    )
    return bytes(bits) if bits is not None else statuslist.empty()


def credential_status(*, credential_id: str) -> dict:
    """{"revoked": bool, "suspended": bool} from the status list rows."""
    index = IssuedCredential.objects.values_list("status_index", flat=True).get(id=credential_id)
    return {
        "revoked": statuslist.get_bit(_list_bits(vocabulary.REVOCATION), index),
        "suspended": statuslist.get_bit(_list_bits(vocabulary.SUSPENSION), index),
    }


def status_list_document(*, purpose: str) -> tuple[dict, str]:
    """The signed StatusList2021Credential and its (quoted) ETag.

    Raises StatusList.DoesNotExist for an unknown purpose or a list not yet signed.
    """
    row = (
        StatusList.objects.filter(purpose=purpose, number=1)
        .exclude(credential="")
        .values_list("credential", "etag")
        .first()
    )
    if row is None:
        raise StatusList.DoesNotExist(f"no signed {purpose!r} status list")
    return json.loads(row[0]), row[1]


def credential_document(*, credential_id: str) -> dict:
    """The signed credential as issued."""
    return IssuedCredential.objects.values_list("document", flat=True).get(id=credential_id)


def credentials_for_subject(*, subject_did: str) -> QuerySet[IssuedCredential]:
    return IssuedCredential.objects.filter(subject_did=subject_did).order_by("issued_at", "id")


def did_document(*, did: str) -> dict:
    """The DID document of a did:key (computed locally; raises CredentialError otherwise)."""
    return didkit_backend.resolve_did(did)


def _failed(reason: str) -> str:
    return f"failed: {reason}"


def _issuer_did(document: dict) -> str | None:
    issuer = document.get("issuer")
    if isinstance(issuer, dict):
        issuer = issuer.get("id")
    return issuer if isinstance(issuer, str) else None


def _signature(document: dict) -> str:
    """The proof check: strict offline JSON-LD (pyld), then the signature (didkit)."""
    try:
        jsonld.expand(document)
    except jsonld.JsonLdError as exc:
        return _failed(str(exc))
    try:
        result = didkit_backend.verify_credential(document)
    except CredentialError as exc:
        return _failed(str(exc))
    if result.get("errors"):
        return _failed("; ".join(result["errors"]))
    if "proof" not in result.get("checks", []):
        return _failed("no proof was checked")
    return "ok"


def _parse_datetime(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if timezone.is_aware(parsed) else None


# Verified status lists by the SHA-256 of their exact text: a list is verified once, not on
# every check. Tampered or re-signed text hashes differently and is verified afresh.
_verified_lists: LRUCache = LRUCache(maxsize=16)
_verified_lists_lock = threading.Lock()


def _verified_list_bits(purpose: str, trusted: set[str]) -> bytes:
    """The bits of our signed list for the purpose, after checking the list credential."""
    row = (
        StatusList.objects.filter(purpose=purpose, number=1)
        .values_list("credential", flat=True)
        .first()
    )
    if not row:
        raise ValueError(f"the {purpose} status list does not exist")
    digest = (hashlib.sha256(row.encode()).hexdigest(), vocabulary.status_list_url(purpose))
    with _verified_lists_lock:
        cached = _verified_lists.get(digest)
    if cached is not None:
        issuer, bits = cached
        if issuer not in trusted:
            raise ValueError(f"the {purpose} status list issuer {issuer} is not trusted")
        return bits
    document = json.loads(row)
    signature = _signature(document)
    if signature != "ok":
        raise ValueError(f"the {purpose} status list signature {signature}")
    issuer = _issuer_did(document)
    if issuer not in trusted:
        raise ValueError(f"the {purpose} status list issuer {issuer} is not trusted")
    subject = document.get("credentialSubject") or {}
    if (
        document.get("id") != vocabulary.status_list_url(purpose)
        or "StatusList2021Credential" not in document.get("type", [])
        or subject.get("type") != "StatusList2021"
        or subject.get("statusPurpose") != purpose
    ):
        raise ValueError(f"the {purpose} status list is not a {purpose} StatusList2021Credential")
    bits = statuslist.decode(subject.get("encodedList"))
    with _verified_lists_lock:
        _verified_lists[digest] = (issuer, bits)
    return bits


def _credential_status(document: dict, trusted: set[str]) -> tuple[str, str | None]:
    entry = document.get("credentialStatus")
    revocation_url = vocabulary.status_list_url(vocabulary.REVOCATION)
    if not isinstance(entry, dict):
        return "unknown", "the credential names no credentialStatus"
    if (
        entry.get("type") != "StatusList2021Entry"
        or entry.get("statusPurpose") != vocabulary.REVOCATION
        or entry.get("statusListCredential") != revocation_url
    ):
        return "unknown", f"credentialStatus is not an entry in {revocation_url}"
    raw_index = entry.get("statusListIndex")
    if (
        not isinstance(raw_index, str)
        or not raw_index.isdigit()
        or int(raw_index) >= statuslist.LIST_BITS
    ):
        return "unknown", f"statusListIndex {raw_index!r} is not an index of the list"
    index = int(raw_index)
    try:
        # The suspension bit lives at the same index of the suspension list (see
        # services.credential_issue: didkit 0.3.3 allows one credentialStatus entry).
        revoked = statuslist.get_bit(_verified_list_bits(vocabulary.REVOCATION, trusted), index)
        suspended = statuslist.get_bit(_verified_list_bits(vocabulary.SUSPENSION, trusted), index)
    except ValueError as exc:
        return "unknown", str(exc)
    if revoked:
        return "revoked", None
    if suspended:
        return "suspended", None
    return "active", None


def credential_verify(*, document: dict) -> dict:
    """Verifies a credential offline against this portal's keys and status lists.

    {"verified": bool, "checks": {"signature", "issuer_trusted", "not_expired": "ok" or
    "failed: ...", "status": "active" | "revoked" | "suspended" | "unknown"}, "errors": [...]}.
    verified is true only when every check is "ok" and the status is "active"; anything
    missing (a status list, a date, a proof) fails closed.
    """
    if not isinstance(document, dict):
        reason = _failed("a credential must be a JSON object")
        checks = {
            "signature": reason,
            "issuer_trusted": reason,
            "not_expired": reason,
            "status": "unknown",
        }
        return {
            "verified": False,
            "checks": checks,
            "errors": ["a credential must be a JSON object"],
        }

    trusted = trusted_issuer_dids()
    checks = {"signature": _signature(document)}

    issuer = _issuer_did(document)
    checks["issuer_trusted"] = (
        "ok" if issuer in trusted else _failed(f"issuer {issuer!r} is not a trusted issuer")
    )

    if "expirationDate" not in document:
        checks["not_expired"] = "ok"
    else:
        expires = _parse_datetime(document["expirationDate"])
        if expires is None:
            checks["not_expired"] = _failed(
                f"expirationDate {document['expirationDate']!r} is not a date-time"
            )
        elif expires <= timezone.now():
            checks["not_expired"] = _failed(f"expired at {document['expirationDate']}")
        else:
            checks["not_expired"] = "ok"

    status, status_error = _credential_status(document, trusted)
    checks["status"] = status

    errors = [
        f"{name}: {value[len('failed: ') :]}"
        for name, value in checks.items()
        if value.startswith("failed: ")
    ]
    if status_error:
        errors.append(f"status: {status_error}")
    elif status != "active":
        errors.append(f"status: the credential is {status}")
    verified = not errors
    return {"verified": verified, "checks": checks, "errors": errors}
