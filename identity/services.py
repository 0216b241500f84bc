"""Writes: keys, DIDs, credentials and their status bits.

Every function that writes runs in the caller's transaction (atomic() nests as a savepoint),
so a consent change, its credential and its status-list bit commit or roll back together.
"""

import hashlib
import json
import re
import secrets
import uuid
from datetime import UTC, datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from identity import didkit_backend, jsonld, statuslist, vocabulary
from identity.keys import decrypt_secret, encrypt_secret
from identity.models import DidKey, IssuedCredential, IssuerKey, StatusList

DUO_ID = re.compile(r"^DUO:\d{7}$")
MONDO_ID = re.compile(r"^MONDO:\d{7}$")
CONSENT_STATUSES = ("ConsentGiven", "RenewedConsentGiven")


class CredentialStateError(ValueError):
    """The status change is not allowed: revocation is final."""


class ClaimError(ValueError):
    """A claim the caller passed is not acceptable; `field` names it."""

    def __init__(self, message: str, *, field: str):
        super().__init__(message)
        self.field = field


class StatusListFullError(RuntimeError):
    """Every index of the status list is taken."""


def _vc_datetime(value: datetime) -> str:
    """A VC 1.1 date: UTC, whole seconds, "Z"."""
    if timezone.is_naive(value):
        raise ValueError("datetimes must be timezone-aware")
    return value.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def issuer_get_or_create() -> IssuerKey:
    """The active issuer key, created (Ed25519 did:key) on first use."""
    key = IssuerKey.objects.filter(active=True).first()
    if key is not None:
        return key
    jwk = didkit_backend.generate_ed25519_jwk()
    try:
        with transaction.atomic():
            return IssuerKey.objects.create(
                did=didkit_backend.did_key_from_jwk(jwk),
                verification_method=didkit_backend.verification_method(jwk),
                encrypted_jwk=encrypt_secret(jwk),
                active=True,
            )
    except IntegrityError:
        # Another process created it first (the partial unique index on active).
        return IssuerKey.objects.get(active=True)


def did_create() -> DidKey:
    """A new Ed25519 did:key whose private key the portal holds, encrypted."""
    jwk = didkit_backend.generate_ed25519_jwk()
    return DidKey.objects.create(
        did=didkit_backend.did_key_from_jwk(jwk),
        encrypted_jwk=encrypt_secret(jwk),
        custody=DidKey.Custody.PORTAL,
    )


def _sign(credential: dict, issuer: IssuerKey) -> dict:
    return didkit_backend.issue_credential(
        credential,
        jwk=decrypt_secret(issuer.encrypted_jwk),
        verification_method=issuer.verification_method,
    )


def _sign_status_list(status_list: StatusList, issuer: IssuerKey) -> None:
    url = vocabulary.status_list_url(status_list.purpose)
    credential = {
        "@context": [vocabulary.CREDENTIALS_V1, vocabulary.STATUS_LIST_2021_V1],
        "id": url,
        "type": ["VerifiableCredential", "StatusList2021Credential"],
        "issuer": issuer.did,
        "issuanceDate": _vc_datetime(timezone.now()),
        "credentialSubject": {
            "id": f"{url}#list",
            "type": "StatusList2021",
            "statusPurpose": status_list.purpose,
            "encodedList": statuslist.encode(bytes(status_list.bits)),
        },
    }
    # Stored as served, so the ETag is a hash of the exact bytes verifiers receive.
    status_list.credential = json.dumps(_sign(credential, issuer))
    status_list.etag = '"' + hashlib.sha256(status_list.credential.encode()).hexdigest()[:40] + '"'
    status_list.save(update_fields=["bits", "credential", "etag", "updated_at"])


def _locked_status_list(purpose: str) -> StatusList:
    if purpose not in vocabulary.STATUS_PURPOSES:
        raise ValueError(f"unknown status purpose {purpose!r}")
    StatusList.objects.get_or_create(purpose=purpose, number=1)
    return StatusList.objects.select_for_update().get(purpose=purpose, number=1)


@transaction.atomic
def status_list_sign(*, purpose: str) -> StatusList:
    """(Re-)signs the status list with the active issuer key, creating it if need be."""
    status_list = _locked_status_list(purpose)
    _sign_status_list(status_list, issuer_get_or_create())
    return status_list


def _ensure_status_lists() -> None:
    for purpose in vocabulary.STATUS_PURPOSES:
        if not StatusList.objects.filter(purpose=purpose, number=1).exclude(credential="").exists():
            status_list_sign(purpose=purpose)


def _random_free_index() -> int:
    """A random index no credential uses and whose bit is clear in every list.

    Random, not sequential: a sequential index would reveal issuance order and let a
    verifier link credentials issued together.
    """
    lists = [
        bytes(bits) for bits in StatusList.objects.filter(number=1).values_list("bits", flat=True)
    ]

    def free(index: int) -> bool:
        return not any(statuslist.get_bit(bits, index) for bits in lists)

    for _ in range(64):
        index = secrets.randbelow(statuslist.LIST_BITS)
        if free(index) and not IssuedCredential.objects.filter(status_index=index).exists():
            return index
    # Nearly full: pick among what is left.
    used = set(IssuedCredential.objects.values_list("status_index", flat=True))
    left = [i for i in range(statuslist.LIST_BITS) if i not in used and free(i)]
    if not left:
        raise StatusListFullError("the status list has no free index left")
    return secrets.choice(left)


def _subject(*, subject_did: str, credential_type: str, claims: dict) -> dict:
    if not isinstance(subject_did, str) or not subject_did.startswith("did:"):
        raise ClaimError(f"subject_did must be a DID, not {subject_did!r}", field="subject_did")
    if credential_type not in vocabulary.CREDENTIAL_TYPES:
        raise ClaimError(
            f"credential_type must be one of {', '.join(vocabulary.CREDENTIAL_TYPES)}",
            field="credential_type",
        )
    if not isinstance(claims, dict):
        raise ClaimError("claims must be an object", field="claims")
    for field in ("id", "@context", "@id", "type", "@type"):
        if field in claims:
            raise ClaimError(f"claims may not set {field!r}", field=field)
    subject = {"id": subject_did, **claims}
    if credential_type == vocabulary.CONSENT_CREDENTIAL:
        if not isinstance(subject.get("purpose"), str) or not DUO_ID.match(subject["purpose"]):
            raise ClaimError("purpose must be a DUO term id like DUO:0000042", field="purpose")
        modifiers = subject.get("dataUseModifiers", [])
        if not isinstance(modifiers, list) or not all(
            isinstance(m, str) and DUO_ID.match(m) for m in modifiers
        ):
            raise ClaimError(
                "dataUseModifiers must be a list of DUO term ids", field="dataUseModifiers"
            )
        if "disease" in subject and not (
            isinstance(subject["disease"], str) and MONDO_ID.match(subject["disease"])
        ):
            raise ClaimError("disease must be a MONDO term id like MONDO:0005015", field="disease")
        subject.setdefault("consentStatus", "ConsentGiven")
        if subject["consentStatus"] not in CONSENT_STATUSES:
            raise ClaimError(
                f"consentStatus must be one of {', '.join(CONSENT_STATUSES)}", field="consentStatus"
            )
    return subject


@transaction.atomic
def credential_issue(
    *,
    subject_did: str,
    credential_type: str,
    claims: dict,
    expires_at: datetime | None = None,
) -> IssuedCredential:
    """Issues, signs and stores an EnrolmentCredential or ConsentCredential."""
    subject = _subject(subject_did=subject_did, credential_type=credential_type, claims=claims)
    now = timezone.now()
    if expires_at is not None and (timezone.is_naive(expires_at) or expires_at <= now):
        raise ClaimError(
            "expires_at must be a timezone-aware time in the future", field="expires_at"
        )
    issuer = issuer_get_or_create()
    _ensure_status_lists()

    for _ in range(5):
        index = _random_free_index()
        revocation_url = vocabulary.status_list_url(vocabulary.REVOCATION)
        credential = {
            "@context": vocabulary.credential_context(),
            "id": f"urn:uuid:{uuid.uuid4()}",
            "type": ["VerifiableCredential", credential_type],
            "issuer": issuer.did,
            "issuanceDate": _vc_datetime(now),
            **({"expirationDate": _vc_datetime(expires_at)} if expires_at is not None else {}),
            "credentialSubject": subject,
            # didkit 0.3.3 accepts a single credentialStatus object (an array is refused), so
            # the credential names only its revocation entry. Suspension uses the SAME index
            # in the suspension list (vocabulary.status_list_url("suspension")); our verifier
            # reads both, a generic StatusList2021 verifier sees revocation only.
            "credentialStatus": {
                "id": f"{revocation_url}#{index}",
                "type": "StatusList2021Entry",
                "statusPurpose": vocabulary.REVOCATION,
                "statusListIndex": str(index),
                "statusListCredential": revocation_url,
            },
        }
        try:
            jsonld.expand(credential)
        except jsonld.JsonLdError as exc:
            raise ClaimError(str(exc), field=exc.term or "claims") from None
        signed = _sign(credential, issuer)
        try:
            with transaction.atomic():
                return IssuedCredential.objects.create(
                    id=signed["id"],
                    subject_did=subject_did,
                    type=credential_type,
                    issuer_key=issuer,
                    document=signed,
                    status_index=index,
                    issued_at=now,
                    # As the document says it: whole seconds.
                    expires_at=expires_at.replace(microsecond=0) if expires_at else None,
                )
        except IntegrityError:
            # A concurrent issuance took the same index first; draw again.
            if not IssuedCredential.objects.filter(status_index=index).exists():
                raise
    raise StatusListFullError("could not allocate a free status list index")


def _status(credential: IssuedCredential, revocation: bytes, suspension: bytes) -> dict:
    return {
        "revoked": statuslist.get_bit(revocation, credential.status_index),
        "suspended": statuslist.get_bit(suspension, credential.status_index),
    }


def _change(credential_id: str, purpose: str, value: bool) -> dict:
    # Lock order: the credential row, then the one list row that changes. Locking the
    # credential serialises every change to it, so reading the other list unlocked is safe.
    credential = IssuedCredential.objects.select_for_update().get(id=credential_id)
    _ensure_status_lists()
    target = _locked_status_list(purpose)
    other = StatusList.objects.get(
        purpose=vocabulary.SUSPENSION
        if purpose == vocabulary.REVOCATION
        else vocabulary.REVOCATION,
        number=1,
    )
    revocation, suspension = (
        (target, other) if purpose == vocabulary.REVOCATION else (other, target)
    )
    if purpose == vocabulary.SUSPENSION and statuslist.get_bit(
        bytes(revocation.bits), credential.status_index
    ):
        raise CredentialStateError(f"credential {credential_id} is revoked; revocation is final")
    bits = bytes(target.bits)
    if statuslist.get_bit(bits, credential.status_index) != value:
        target.bits = statuslist.set_bit(bits, credential.status_index, value)
        _sign_status_list(target, issuer_get_or_create())
    return _status(credential, bytes(revocation.bits), bytes(suspension.bits))


@transaction.atomic
def credential_revoke(*, credential_id: str) -> dict:
    """Sets the revocation bit (final) and re-signs the revocation list. Idempotent."""
    return _change(credential_id, vocabulary.REVOCATION, True)


@transaction.atomic
def credential_suspend(*, credential_id: str) -> dict:
    """Sets the suspension bit and re-signs the suspension list. Idempotent."""
    return _change(credential_id, vocabulary.SUSPENSION, True)


@transaction.atomic
def credential_resume(*, credential_id: str) -> dict:
    """Clears the suspension bit and re-signs the suspension list. Idempotent."""
    return _change(credential_id, vocabulary.SUSPENSION, False)
