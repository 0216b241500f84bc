"""Reads: credential status, published status lists, DID documents, verification."""

import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import segno
from cachetools import LRUCache
from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from identity import didkit_backend, jsonld, jwt, statuslist, vocabulary
from identity.db import prepared_rows, status_etag_joins, status_etags
from identity.didkit_backend import CredentialError
from identity.keys import attestation_mac, document_digest
from identity.models import DidKey, IssuedCredential, IssuerKey, SeenChallenge, StatusList


def trusted_issuer_dids() -> set[str]:
    """The trust configuration: every issuer key of ours still trusted, active or rotated
    out (services.issuer_rotate, services.issuer_trust_set)."""
    return set(IssuerKey.objects.filter(trusted=True).values_list("did", flat=True))


def _verification_state() -> tuple[set[str], dict[str, str]]:
    """(trusted issuer DIDs, {purpose: ETag} of our signed status lists), in one query:
    everything a warm verification reads from the database."""
    joins, params = status_etag_joins()
    rows = prepared_rows(
        f"SELECT k.did, r.etag, s.etag FROM (SELECT 1 AS one) one"
        f" LEFT JOIN {IssuerKey._meta.db_table} k ON k.trusted = %s {joins}",
        [True, *params],
    )
    return {row[0] for row in rows if row[0] is not None}, status_etags(rows[0][1:])


def issuer_keys() -> QuerySet[IssuerKey]:
    return IssuerKey.objects.order_by("created_at", "id")


def holder_keys(*, holder: str, live_only: bool = True) -> QuerySet[DidKey]:
    """The keys registered for a holder (newest first); live ones only unless asked."""
    keys = DidKey.objects.filter(holder=holder).order_by("-created_at", "-id")
    return keys.filter(retired_at__isnull=True) if live_only else keys


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


# What a status check says when a status list address has our shape but another base URL:
# the lists were published under another SITE_URL (a changed setting, usually). The
# phrase marks that cause in a verification's errors (verification_site_url_mismatch).
_NOT_PUBLISHED_HERE = "is not published by this portal (SITE_URL is"


def status_list_base_url(url, purpose: str) -> str | None:
    """The base URL a status list address of this software's shape was published under:
    "https://old.example" for "https://old.example/credentials/status/revocation" and the
    purpose "revocation"; None for anything else (another path, another purpose, not an
    absolute http(s) URL)."""
    suffix = f"{vocabulary.PUBLIC_PREFIX}/status/{purpose}"
    if not isinstance(url, str) or not url.endswith(suffix) or any(c.isspace() for c in url):
        return None
    base = url[: -len(suffix)]
    try:
        parts = urlsplit(base)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        return None
    return base


def _foreign_status_list(what: str, event: str) -> str:
    """The status check's reason: `what` names a status list address under another base URL."""
    return f"{what} {_NOT_PUBLISHED_HERE} {settings.SITE_URL}); was SITE_URL changed after it was {event}?"


def _issuer_did(document: dict) -> str | None:
    issuer = document.get("issuer")
    if isinstance(issuer, dict):
        issuer = issuer.get("id")
    return issuer if isinstance(issuer, str) else None


# Documents whose proof checked out, by the SHA-256 of their canonical JSON. Both checks in
# _signature are functions of the document alone: the contexts are fixed and offline, and
# the proof names a did:key / did:jwk, whose key is in the DID itself. So the same bytes
# give the same answer; any change to the document changes the digest and is checked
# afresh. Only successes are kept (anyone can make a self-signed did:key document, so a
# flood could lower the hit rate, never change an answer). Trust in the issuer, expiry and
# status are not cached: _credential_checks decides them every call.
_verified_proofs: LRUCache = LRUCache(maxsize=65536)
_verified_proofs_lock = threading.Lock()


def _signature(document: dict, *, proof_mac: str = "") -> str:
    """The proof check: strict offline JSON-LD (pyld), then the signature (didkit).

    proof_mac is the attestation stored with a credential we issued (keys.attestation_mac):
    when it matches this very document, the document is byte for byte what our issuer
    signed (its unsigned form passed the JSON-LD check before signing), so the proof is not
    checked again; anything else is checked in full.
    """
    return _signature_begin(document, proof_mac=proof_mac)()


def _signature_begin(document: dict, *, proof_mac: str = "") -> Callable[[], str]:
    """_signature, started: didkit checks the proof on its own threads while the caller
    reads the trust and status state; the function returned waits for the verdict."""
    digest = document_digest(document)
    if digest is not None:
        if proof_mac and proof_mac.isascii() and hmac.compare_digest(proof_mac, attestation_mac(digest)):
            return lambda: "ok"
        with _verified_proofs_lock:
            if _verified_proofs.get(digest):
                return lambda: "ok"
    try:
        jsonld.check(document)
    except jsonld.JsonLdError as exc:
        refused = _failed(str(exc))
        return lambda: refused
    try:
        wait = didkit_backend.verify_credential_begin(document)
    except CredentialError as exc:
        refused = _failed(str(exc))
        return lambda: refused

    def verdict() -> str:
        try:
            result = wait()
        except CredentialError as exc:
            return _failed(str(exc))
        if result.get("errors"):
            return _failed("; ".join(result["errors"]))
        if "proof" not in result.get("checks", []):
            return _failed("no proof was checked")
        if digest is not None:
            with _verified_proofs_lock:
                _verified_proofs[digest] = True
        return "ok"

    return verdict


def _parse_datetime(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if timezone.is_aware(parsed) else None


# Verified status lists, by purpose and the row's ETag. The ETag is the hash of the signed
# text (services._sign_status_list writes text, bits and ETag together), so one cheap query
# for both ETags tells whether what we verified is still what the database holds. A new or
# re-signed list has a new ETag and is read and verified afresh; a list whose text does not
# hash to its ETag is refused; a missing list fails closed. The issuer is checked against
# the trust configuration on every call, cached or not.
_verified_lists: LRUCache = LRUCache(maxsize=16)
_verified_lists_lock = threading.Lock()


def _status_list_etag(text: str) -> str:
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:40] + '"'


def _verify_list_row(purpose: str) -> tuple[str, tuple[str, bytes]]:
    """(etag, (issuer, bits)) of our signed list for the purpose, read and checked now."""
    row = (
        StatusList.objects.filter(purpose=purpose, number=1)
        .values_list("credential", "etag")
        .first()
    )
    if not row or not row[0]:
        raise ValueError(f"the {purpose} status list does not exist")
    text, etag = row
    if _status_list_etag(text) != etag:
        raise ValueError(f"the {purpose} status list text does not match its ETag")
    document = json.loads(text)
    signature = _signature(document)
    if signature != "ok":
        raise ValueError(f"the {purpose} status list signature {signature}")
    issuer = _issuer_did(document)
    subject = document.get("credentialSubject") or {}
    if document.get("id") != vocabulary.status_list_url(purpose) and status_list_base_url(
        document.get("id"), purpose
    ):
        raise ValueError(_foreign_status_list(
            f"this portal's {purpose} status list is signed as {document['id']}, which", "signed"
        ))
    if (
        document.get("id") != vocabulary.status_list_url(purpose)
        or "StatusList2021Credential" not in document.get("type", [])
        or subject.get("type") != "StatusList2021"
        or subject.get("statusPurpose") != purpose
    ):
        raise ValueError(f"the {purpose} status list is not a {purpose} StatusList2021Credential")
    return etag, (issuer, statuslist.decode(subject.get("encodedList")))


def _status_list_etags() -> dict[str, str]:
    purposes = vocabulary.STATUS_PURPOSES
    return dict(prepared_rows(
        f"SELECT purpose, etag FROM {StatusList._meta.db_table}"
        f" WHERE number = 1 AND purpose IN ({', '.join(['%s'] * len(purposes))}) AND etag <> ''",
        list(purposes),
    ))


def _verified_lists_bits(trusted: set[str], etags: dict[str, str] | None = None) -> dict[str, bytes]:
    """{purpose: bits} of both our signed lists, each checked (signature, trusted issuer,
    type and purpose) when its ETag was first seen; raises ValueError (fail closed).
    `etags` is what the database says now ({purpose: ETag}); read here unless given."""
    etags = _status_list_etags() if etags is None else etags
    bits = {}
    for purpose in vocabulary.STATUS_PURPOSES:
        if purpose not in etags:
            raise ValueError(f"the {purpose} status list does not exist")
        key = (purpose, etags[purpose], vocabulary.status_list_url(purpose))
        with _verified_lists_lock:
            cached = _verified_lists.get(key)
        if cached is None:
            etag, cached = _verify_list_row(purpose)
            with _verified_lists_lock:
                _verified_lists[(purpose, etag, key[2])] = cached
        issuer, bits[purpose] = cached
        if issuer not in trusted:
            raise ValueError(f"the {purpose} status list issuer {issuer} is not trusted")
    return bits


def _credential_status(
    document: dict, trusted: set[str], etags: dict[str, str] | None = None
) -> tuple[str, str | None]:
    entry = document.get("credentialStatus")
    revocation_url = vocabulary.status_list_url(vocabulary.REVOCATION)
    if not isinstance(entry, dict):
        return "unknown", "the credential names no credentialStatus"
    if (
        entry.get("type") != "StatusList2021Entry"
        or entry.get("statusPurpose") != vocabulary.REVOCATION
        or entry.get("statusListCredential") != revocation_url
    ):
        named = entry.get("statusListCredential")
        if (
            entry.get("type") == "StatusList2021Entry"
            and entry.get("statusPurpose") == vocabulary.REVOCATION
            and status_list_base_url(named, vocabulary.REVOCATION) is not None
        ):
            # Our list's address under another base URL: name that cause (still unknown).
            return "unknown", _foreign_status_list(f"the credential's status list {named}", "issued")
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
        lists = _verified_lists_bits(trusted, etags)
        revoked = statuslist.get_bit(lists[vocabulary.REVOCATION], index)
        suspended = statuslist.get_bit(lists[vocabulary.SUSPENSION], index)
    except ValueError as exc:
        return "unknown", str(exc)
    if revoked:
        return "revoked", None
    if suspended:
        return "suspended", None
    return "active", None


def _check_reason(name: str, value) -> str:
    if isinstance(value, str) and value.startswith("failed: "):
        return f"{name}: {value[len('failed: '):]}"
    if name == "status" and value in ("revoked", "suspended"):
        return f"status: the credential is {value}"
    return f"{name}: {value}"


def verification_failure(verification: dict) -> str:
    """Why a verification (credential_verify, credential_evidence, verifiable_verify) did not
    pass, as readable text: its errors in order ("check: reason"), joined by "; ", ending
    with a full stop (or the question mark an error ends with). When it names no errors,
    its failing checks; when it names neither, that nothing verified it."""
    errors = [e for e in verification.get("errors") or [] if isinstance(e, str) and e.strip()]
    if not errors:
        checks = verification.get("checks") or {}
        errors = [
            _check_reason(name, value) for name, value in checks.items() if value not in ("ok", "active")
        ]
    text = "; ".join(dict.fromkeys(error.strip() for error in errors)) or "no check verified it"
    return text if text[-1] in ".?!" else f"{text}."


def verification_site_url_mismatch(verification: dict) -> str | None:
    """When a verification failed because a status list it needs was published under
    another base URL than SITE_URL (see _foreign_status_list): an explanation for the
    operator; None otherwise. The verification fails closed either way."""
    for error in verification.get("errors") or []:
        if not isinstance(error, str):
            continue
        name = error.split(": ", 1)[0]
        if (name == "status" or name.endswith(".status")) and _NOT_PUBLISHED_HERE in error:
            return (
                f"A status list the credential needs is not published under this portal's SITE_URL"
                f" ({settings.SITE_URL}): a configuration problem, not a change of consent. Set"
                f" SITE_URL back to the address the lists and credentials were published under,"
                f" or re-sign the status lists and re-issue the credentials under this one."
            )
    return None


def _not_expired(document: dict) -> str:
    if "expirationDate" not in document:
        return "ok"
    expires = _parse_datetime(document["expirationDate"])
    if expires is None:
        return _failed(f"expirationDate {document['expirationDate']!r} is not a date-time")
    if expires <= timezone.now():
        return _failed(f"expired at {document['expirationDate']}")
    return "ok"


def _verdict(checks: dict, status_error: str | None, **extra) -> dict:
    errors = [
        f"{name}: {value[len('failed: ') :]}"
        for name, value in checks.items()
        if isinstance(value, str) and value.startswith("failed: ")
    ]
    if status_error:
        errors.append(f"status: {status_error}")
    elif checks.get("status", "active") != "active":
        errors.append(f"status: the credential is {checks['status']}")
    return {"verified": not errors, "checks": checks, "errors": errors, **extra}


def _credential_checks(
    document: dict, signature: str | Callable[[], str], trusted: set[str], etags: dict[str, str] | None = None
) -> dict:
    """Every check but the proof's, then the proof's verdict: a string, or a function that
    waits for it (so a started didkit check runs while the others do)."""
    issuer = _issuer_did(document)
    issuer_trusted = "ok" if issuer in trusted else _failed(f"issuer {issuer!r} is not a trusted issuer")
    not_expired = _not_expired(document)
    status, status_error = _credential_status(document, trusted, etags)
    checks = {
        "signature": signature if isinstance(signature, str) else signature(),
        "issuer_trusted": issuer_trusted,
        "not_expired": not_expired,
        "status": status,
    }
    return _verdict(checks, status_error)


def _not_an_object(what: str) -> dict:
    reason = _failed(f"a {what} must be a JSON object")
    checks = {"signature": reason, "issuer_trusted": reason, "not_expired": reason}
    return _verdict({**checks, "status": "unknown"}, None)


def credential_verify(*, document: dict) -> dict:
    """Verifies a credential offline against this portal's keys and status lists.

    {"verified": bool, "checks": {"signature", "issuer_trusted", "not_expired": "ok" or
    "failed: ...", "status": "active" | "revoked" | "suspended" | "unknown"}, "errors": [...]}.
    verified is true only when every check is "ok" and the status is "active"; anything
    missing (a status list, a date, a proof) fails closed.
    """
    if not isinstance(document, dict):
        return _not_an_object("credential")
    signature = _signature_begin(document)
    try:
        trusted, etags = _verification_state()  # while didkit checks the proof
        return _credential_checks(document, signature, trusted, etags)
    except BaseException:
        signature()  # a database error: let the started check finish before it propagates
        raise


def credentials_status_bulk(*, credential_ids) -> tuple[dict[str, str], str | None]:
    """The status our signed lists give many credentials we issued, in two queries whatever
    their number: ({id: "active" | "revoked" | "suspended"}, None), or ({}, why) when the
    lists themselves cannot be trusted (missing, not signed by a trusted issuer, or signed
    under another SITE_URL). An id not on record is absent.

    Only the lists are verified here, not each document (a bulk check of 10,000 samples
    cannot digest 10,000 documents within its budget): a bulk permit needs the signed status
    to agree with the database; a single check verifies the whole credential."""
    ids = list(credential_ids)
    if not ids:
        return {}, None
    trusted, etags = _verification_state()
    try:
        lists = _verified_lists_bits(trusted, etags)
    except ValueError as exc:
        return {}, str(exc)
    if connection.vendor == "postgresql":
        rows = prepared_rows(f"SELECT id, status_index FROM {IssuedCredential._meta.db_table}"
                             f" WHERE id = ANY(%b::text[])", [ids])
    else:
        rows = IssuedCredential.objects.filter(pk__in=ids).values_list("pk", "status_index")
    revocation, suspension = lists[vocabulary.REVOCATION], lists[vocabulary.SUSPENSION]
    return {
        credential_id: "revoked" if statuslist.get_bit(revocation, index)
        else "suspended" if statuslist.get_bit(suspension, index) else "active"
        for credential_id, index in rows
    }, None


def credential_evidence(*, credential_id: str) -> dict | None:
    """A credential we issued, as a custodian's evidence: {"credential": the document,
    "credential_status": {"revoked", "suspended"}, "verification": credential_verify's
    answer}, in one query; None for an unknown id.

    The same checks as credential_verify (the proof, the issuer's trust, expiry, both
    status lists, fail closed); the status bits are those the verification read, at the
    index the credential names.
    """
    joins, params = status_etag_joins()
    rows = prepared_rows(
        f"SELECT c.document, c.status_index, c.proof_mac, k.did, r.etag, s.etag"
        f" FROM {IssuedCredential._meta.db_table} c"
        f" LEFT JOIN {IssuerKey._meta.db_table} k ON k.trusted = %s {joins} WHERE c.id = %s",
        [True, *params, credential_id],
    )
    if not rows:
        return None
    document, index, proof_mac = rows[0][0], rows[0][1], rows[0][2]
    if isinstance(document, (str, bytes)):
        document = json.loads(document)
    trusted = {row[3] for row in rows if row[3] is not None}
    etags = status_etags(rows[0][4:])
    signature = _signature(document, proof_mac=proof_mac)
    verification = _credential_checks(document, signature, trusted, etags)
    try:
        lists_bits = _verified_lists_bits(trusted, etags)
        bits = lists_bits[vocabulary.REVOCATION], lists_bits[vocabulary.SUSPENSION]
    except ValueError:
        # The verification above already fails closed; report the raw rows as before.
        bits = _list_bits(vocabulary.REVOCATION), _list_bits(vocabulary.SUSPENSION)
    status = {"revoked": statuslist.get_bit(bits[0], index),
              "suspended": statuslist.get_bit(bits[1], index)}
    return {"credential": document, "credential_status": status, "verification": verification}


def _jwt_credential_verify(token: str, trusted: set[str]) -> dict:
    """A JWT VC (VC Data Model 1.1, section 6.3.1): didkit checks the JWS and the JWT dates;
    the claims are mapped back onto the credential for the issuer, expiry and status checks."""
    try:
        claims = jwt.claims(token)
        result = didkit_backend.verify_credential_jwt(token)
        signature = (
            _failed("; ".join(result["errors"]))
            if result.get("errors")
            else ("ok" if result.get("checks") else _failed("no proof was checked"))
        )
    except (CredentialError, jwt.JwtFormatError) as exc:
        claims, signature = {}, _failed(str(exc))
    document = dict(claims.get("vc")) if isinstance(claims.get("vc"), dict) else {}
    if "iss" in claims:
        document["issuer"] = claims["iss"]
    if isinstance(claims.get("exp"), int):
        document["expirationDate"] = datetime.fromtimestamp(claims["exp"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if signature == "ok" and document:
        try:
            jsonld.expand({key: value for key, value in document.items() if key != "proof"})
        except jsonld.JsonLdError as exc:
            signature = _failed(str(exc))
    return _credential_checks(document, signature, trusted)


def _presentation_holder(presentation: dict | str) -> tuple[str | None, str | None]:
    """(holder, signer DID) of a presentation, as it claims them."""
    if isinstance(presentation, str):
        try:
            header, claims = jwt.header(presentation), jwt.claims(presentation)
        except jwt.JwtFormatError:
            return None, None
        vp = claims.get("vp") if isinstance(claims.get("vp"), dict) else {}
        kid = header.get("kid")
        signer = kid.split("#", 1)[0] if isinstance(kid, str) else None
        holder = vp.get("holder")
        if claims.get("iss") != holder:
            return None, signer
        return holder if isinstance(holder, str) else None, signer
    proof = presentation.get("proof")
    method = proof.get("verificationMethod") if isinstance(proof, dict) else None
    holder = presentation.get("holder")
    signer = method.split("#", 1)[0] if isinstance(method, str) else None
    return holder if isinstance(holder, str) else None, signer


def _presentation_credentials(presentation: dict | str) -> list:
    if isinstance(presentation, str):
        try:
            vp = jwt.claims(presentation).get("vp")
        except jwt.JwtFormatError:
            return []
    else:
        vp = presentation
    credentials = vp.get("verifiableCredential", []) if isinstance(vp, dict) else []
    return credentials if isinstance(credentials, list) else [credentials]


def presentation_verify(*, presentation: dict | str, challenge: str | None, domain: str | None) -> dict:
    """A VP (LD proof or JWT): the proof, the challenge (unused before) and domain, that the
    holder signed it, and every credential in it (credential_verify's checks)."""
    trusted = trusted_issuer_dids()
    checks = {}
    if not challenge or not domain:
        missing = _failed("the verifier must name the challenge and domain it expects")
        checks = {"signature": missing, "challenge": missing, "domain": missing}
    else:
        if SeenChallenge.objects.filter(digest=SeenChallenge.digest_of(domain, challenge)).exists():
            checks["challenge"] = _failed("this challenge was already answered (replay)")
        if isinstance(presentation, dict):
            try:
                jsonld.expand(presentation)
            except jsonld.JsonLdError as exc:
                checks["signature"] = _failed(str(exc))
        if "signature" not in checks:
            try:
                result = didkit_backend.verify_presentation(
                    presentation, challenge=challenge, domain=domain
                )
            except CredentialError as exc:
                result = {"errors": [str(exc)]}
            if result.get("errors") or not result.get("checks"):
                # didkit refuses a proof made for another challenge or domain the same way
                # as a bad signature; tell them apart by what the presentation claims.
                claimed_challenge, claimed_domain = _claimed_challenge_domain(presentation)
                if claimed_challenge != challenge:
                    checks.setdefault("challenge", _failed(f"the presentation answers {claimed_challenge!r}"))
                if claimed_domain != domain:
                    checks["domain"] = _failed(f"the presentation is for {claimed_domain!r}")
                checks["signature"] = _failed("; ".join(result.get("errors") or ["no proof was checked"]))
            else:
                checks["signature"] = "ok"
        checks.setdefault("challenge", "ok")
        checks.setdefault("domain", "ok")
    holder, signer = _presentation_holder(presentation)
    checks["holder"] = (
        "ok" if holder and holder == signer else _failed("the presentation was not signed by its holder")
    )
    credentials = []
    for credential in _presentation_credentials(presentation):
        if isinstance(credential, str):
            credentials.append(_jwt_credential_verify(credential, trusted))
        elif isinstance(credential, dict):
            credentials.append(_credential_checks(credential, _signature(credential), trusted))
        else:
            credentials.append(_not_an_object("credential"))
    verdict = _verdict(checks, None, credentials=credentials)
    for number, result in enumerate(credentials):
        verdict["errors"] += [f"credentials[{number}].{error}" for error in result["errors"]]
    verdict["verified"] = not verdict["errors"]
    return verdict


def _claimed_challenge_domain(presentation: dict | str) -> tuple:
    if isinstance(presentation, str):
        try:
            claims = jwt.claims(presentation)
        except jwt.JwtFormatError:
            return None, None
        return claims.get("nonce"), claims.get("aud")
    proof = presentation.get("proof")
    proof = proof if isinstance(proof, dict) else {}
    return proof.get("challenge"), proof.get("domain")


def _looks_like_presentation(submitted) -> bool:
    if isinstance(submitted, dict):
        types = submitted.get("type")
        return "VerifiablePresentation" in (types if isinstance(types, list) else [types])
    try:
        return "vp" in jwt.claims(submitted)
    except jwt.JwtFormatError:
        return False


def verifiable_verify(
    *, submitted: dict | str, challenge: str | None = None, domain: str | None = None
) -> dict:
    """The one verification service: a VC or a VP, as JSON (LD proof) or a JWT string.

    Returns {"kind": "credential" | "presentation", "format": "ldp" | "jwt", "verified",
    "checks", "errors"} (and "credentials" for a VP, one result per credential). Checks are
    "ok" or "failed: <reason>"; status is active / revoked / suspended / unknown. Missing
    or untrusted status lists fail closed. Reads only: the verification API records an
    accepted challenge with services.presentation_challenge_record.
    """
    fmt = "jwt" if isinstance(submitted, str) else "ldp"
    if _looks_like_presentation(submitted):
        result = presentation_verify(presentation=submitted, challenge=challenge, domain=domain)
        return {"kind": "presentation", "format": fmt, **result}
    if isinstance(submitted, str):
        result = _jwt_credential_verify(submitted, trusted_issuer_dids())
    else:
        result = credential_verify(document=submitted)
    return {"kind": "credential", "format": fmt, **result}


def did_qr_svg(*, did: str) -> str:
    """An SVG QR code of the DID, made here (segno, pure Python), never fetched."""
    return segno.make(did, error="m").svg_inline(scale=4, dark="#1b2a3a", light="#ffffff")
