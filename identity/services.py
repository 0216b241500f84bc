"""Writes: keys, DIDs, credentials and their status bits.

Every function that writes runs in the caller's transaction (atomic() nests as a savepoint),
so a consent change, its credential and its status-list bit commit or roll back together.
"""

import hashlib
import json
import re
import secrets
import threading
import uuid
from datetime import UTC, datetime, timedelta

from cachetools import LRUCache
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from identity import didkit_backend, jsonld, jwt, statuslist, vocabulary
from identity.db import prepared_execute, prepared_rows, status_etag_joins, status_etags
from identity.didkit_backend import CredentialError
from identity.keys import attestation_mac, decrypt_secret, document_digest, encrypt_secret
from identity.models import Challenge, DidKey, IssuedCredential, IssuerKey, SeenChallenge, StatusList

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


def did_create(*, holder: str = "") -> DidKey:
    """A new Ed25519 did:key whose private key the portal holds, encrypted (custodial)."""
    jwk = didkit_backend.generate_ed25519_jwk()
    return DidKey.objects.create(
        did=didkit_backend.did_key_from_jwk(jwk),
        encrypted_jwk=encrypt_secret(jwk),
        custody=DidKey.Custody.PORTAL,
        holder=holder,
        label="held by the portal",
    )


class IssuerRotationError(ValueError):
    """The trust change asked for would leave no trusted key, or names no key we have."""


@transaction.atomic
def issuer_rotate(*, distrust_previous: bool = False) -> IssuerKey:
    """A new active issuer key; the status lists are re-signed with it at once.

    The previous key stays in the trust configuration, so every credential it signed keeps
    verifying, unless distrust_previous (a compromised key): then what it signed fails
    the issuer check and must be re-issued.
    """
    now = timezone.now()
    previous = IssuerKey.objects.select_for_update().filter(active=True).first()
    if previous is not None:
        previous.active = False
        previous.retired_at = now
        previous.trusted = not distrust_previous
        previous.save(update_fields=["active", "retired_at", "trusted"])
    jwk = didkit_backend.generate_ed25519_jwk()
    key = IssuerKey.objects.create(
        did=didkit_backend.did_key_from_jwk(jwk),
        verification_method=didkit_backend.verification_method(jwk),
        encrypted_jwk=encrypt_secret(jwk),
        active=True,
    )
    for status_list in StatusList.objects.select_for_update().exclude(credential=""):
        _sign_status_list(status_list, key)
    global _last_issuance
    _last_issuance = None
    return key


@transaction.atomic
def issuer_trust_set(*, did: str, trusted: bool) -> IssuerKey:
    """Adds an issuer key of ours to, or removes it from, the trust configuration."""
    key = IssuerKey.objects.select_for_update().filter(did=did).first()
    if key is None:
        raise IssuerRotationError(f"no issuer key {did!r}")
    if not trusted and key.active:
        raise IssuerRotationError("the active issuer key cannot be distrusted; rotate first")
    key.trusted = trusted
    key.save(update_fields=["trusted"])
    return key


# Participant-held keys, DID Auth and signed decisions ---------------------------------------

CHALLENGE_TTL = timedelta(minutes=10)
# A presentation answering a challenge must have been made recently, and expire soon.
PRESENTATION_MAX_LIFETIME = timedelta(minutes=15)


class PresentationError(ValueError):
    """A presentation was refused; `check` names the check that failed."""

    def __init__(self, message: str, *, check: str):
        super().__init__(message)
        self.check = check


def challenge_create(
    *, purpose: str, bound_to: str, domain: str, expected: dict | None = None
) -> Challenge:
    """A one-time nonce. For a decision, `expected` is the decision the presentation must
    carry; the nonce and the time are added to it here, so the signed payload is bound to
    this challenge."""
    if purpose not in Challenge.Purpose.values:
        raise ValueError(f"unknown challenge purpose {purpose!r}")
    if (purpose == Challenge.Purpose.DECISION) != isinstance(expected, dict):
        raise ValueError("a decision challenge carries the expected decision, DID Auth none")
    now = timezone.now()
    nonce = secrets.token_urlsafe(24)
    if expected is not None:
        expected = {**expected, "nonce": nonce, "issued_at": _vc_datetime(now), "domain": domain}
    return Challenge.objects.create(
        nonce=nonce,
        purpose=purpose,
        bound_to=bound_to,
        expected={"domain": domain, "decision": expected},
        created_at=now,
        expires_at=now + CHALLENGE_TTL,
    )


def _signer(token: str) -> str:
    """The DID that signed a JWT VP: kid, iss and vp.holder must all name it."""
    try:
        header, claims = jwt.header(token), jwt.claims(token)
    except jwt.JwtFormatError as exc:
        raise PresentationError(str(exc), check="format") from None
    kid = header.get("kid")
    did = kid.split("#", 1)[0] if isinstance(kid, str) else None
    vp = claims.get("vp") if isinstance(claims.get("vp"), dict) else {}
    if not did or claims.get("iss") != did or vp.get("holder") != did:
        raise PresentationError(
            "the presentation's kid, iss and vp.holder must name the same DID", check="holder"
        )
    return did


def _check_times(claims: dict, now: datetime) -> None:
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int) or not isinstance(exp, int):
        raise PresentationError("the presentation needs integer iat and exp", check="expiry")
    issued, expires = datetime.fromtimestamp(iat, UTC), datetime.fromtimestamp(exp, UTC)
    if expires <= now or issued > now + timedelta(minutes=2):
        raise PresentationError("the presentation is expired or not yet valid", check="expiry")
    if expires - issued > PRESENTATION_MAX_LIFETIME:
        raise PresentationError("the presentation lives too long", check="expiry")


@transaction.atomic
def presentation_redeem(
    *, token: str, purpose: str, bound_to: str, signers: set[str] | None = None
) -> dict:
    """Verifies a JWT VP answering one of our challenges, and uses the challenge up.

    Checks, in order: the nonce is ours, for this purpose and this caller, unused and
    unexpired; the aud is the domain the challenge was made for; didkit verifies the
    signature against the DID in the kid (resolved offline), with nonce and aud; kid, iss and
    vp.holder name that DID; it is one of `signers` (None for DID Auth, where the key is
    new); for a decision, the "decision" claim equals the expected decision exactly.
    Returns {"did", "decision", "token"}. Raises PresentationError naming the check.
    """
    if not isinstance(token, str) or len(token) > 16_384:
        raise PresentationError("a presentation is a compact JWT string", check="format")
    try:
        claims = jwt.claims(token)
    except jwt.JwtFormatError as exc:
        raise PresentationError(str(exc), check="format") from None
    nonce = claims.get("nonce")
    challenge = (
        Challenge.objects.select_for_update().filter(nonce=nonce).first()
        if isinstance(nonce, str)
        else None
    )
    now = timezone.now()
    if challenge is None or challenge.purpose != purpose or challenge.bound_to != bound_to:
        raise PresentationError("the nonce is not one we issued to you", check="challenge")
    if challenge.used_at is not None:
        raise PresentationError("the nonce was already used (replay)", check="challenge")
    if challenge.expires_at <= now:
        raise PresentationError("the nonce has expired; ask for a new one", check="challenge")
    domain = challenge.expected["domain"]
    if claims.get("aud") != domain:
        raise PresentationError(f"the presentation is not for {domain}", check="domain")
    _check_times(claims, now)
    try:
        result = didkit_backend.verify_presentation(token, challenge=nonce, domain=domain)
    except CredentialError as exc:
        raise PresentationError(str(exc), check="signature") from None
    if result.get("errors") or "JWS" not in result.get("checks", []):
        raise PresentationError(
            "; ".join(result.get("errors") or ["no signature was checked"]), check="signature"
        )
    did = _signer(token)
    if signers is not None and did not in signers:
        raise PresentationError(f"{did} is not one of your registered keys", check="signer")
    expected = challenge.expected["decision"]
    if expected is not None and claims.get("decision") != expected:
        raise PresentationError(
            "the signed decision differs from the one the portal asked you to sign",
            check="payload",
        )
    challenge.used_at = now
    challenge.save(update_fields=["used_at"])
    return {"did": did, "decision": expected, "token": token}


def did_register(*, did: str, holder: str, label: str = "") -> DidKey:
    """Records a participant-held did:key (the browser proved it holds the key)."""
    document = didkit_backend.resolve_did(did)  # refuses anything not resolvable offline
    if document.get("id") != did:
        raise CredentialError(f"{did!r} does not resolve to itself")
    existing = DidKey.objects.filter(did=did).first()
    if existing is not None:
        if existing.holder != holder or existing.retired_at is not None:
            raise CredentialError("this key is already registered, or was retired")
        return existing
    return DidKey.objects.create(
        did=did, custody=DidKey.Custody.PARTICIPANT, holder=holder, label=label[:80]
    )


def did_retire(*, did: str, holder: str) -> DidKey:
    """Retires a key: it signs nothing more. A portal-held key's private part is erased, so
    the portal cannot sign with it either."""
    key = DidKey.objects.select_for_update().filter(did=did, holder=holder).first()
    if key is None:
        raise DidKey.DoesNotExist(f"no key {did!r} for this holder")
    if key.retired_at is None:
        key.retired_at = timezone.now()
        key.encrypted_jwk = ""
        key.save(update_fields=["retired_at", "encrypted_jwk"])
    return key


def decision_sign_custodial(*, did: str, decision: dict) -> str:
    """The portal signs a decision on the participant's behalf with their custodial key.

    The same JWT VP shape the browser makes (EdDSA instead of ES256), so one verifier reads
    both; the event records that the portal signed it.
    """
    key = DidKey.objects.filter(
        did=did, custody=DidKey.Custody.PORTAL, retired_at__isnull=True
    ).first()
    if key is None or not key.encrypted_jwk:
        raise CredentialError(f"the portal holds no live key for {did}")
    now = int(timezone.now().timestamp())
    return jwt.sign(
        {
            "iss": did,
            "aud": decision.get("domain", ""),
            "nonce": decision.get("nonce", ""),
            "iat": now,
            "exp": now + 300,
            "vp": {
                "@context": [vocabulary.CREDENTIALS_V1],
                "type": ["VerifiablePresentation"],
                "holder": did,
            },
            "decision": decision,
        },
        private_jwk=decrypt_secret(key.encrypted_jwk),
        kid=f"{did}#{did.removeprefix('did:key:')}",
    )


def presentation_challenge_record(*, domain: str, challenge: str) -> None:
    """Remembers a challenge the verification API accepted; a second use raises
    IntegrityError (the caller reports a replay)."""
    with transaction.atomic():
        SeenChallenge.objects.create(digest=SeenChallenge.digest_of(domain, challenge))


# Decrypted issuer keys by their ciphertext, so a credential's signing does not open the
# JWE again: the process that signs holds the key in memory while it signs anyway. A key
# row's ciphertext never changes (rotation adds a row).
_issuer_jwks: LRUCache = LRUCache(maxsize=16)
_issuer_jwks_lock = threading.Lock()


def _issuer_jwk(issuer: IssuerKey) -> str:
    with _issuer_jwks_lock:
        jwk = _issuer_jwks.get(issuer.encrypted_jwk)
    if jwk is None:
        jwk = decrypt_secret(issuer.encrypted_jwk)
        with _issuer_jwks_lock:
            _issuer_jwks[issuer.encrypted_jwk] = jwk
    return jwk


def _sign(credential: dict, issuer: IssuerKey) -> dict:
    return didkit_backend.issue_credential(
        credential, jwk=_issuer_jwk(issuer), verification_method=issuer.verification_method
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


def _ensure_status_lists() -> dict[str, str]:
    """{purpose: etag} of both signed lists, signing any not signed yet (one query when
    both exist)."""
    etags = dict(
        StatusList.objects.filter(number=1, purpose__in=vocabulary.STATUS_PURPOSES)
        .exclude(credential="")
        .values_list("purpose", "etag")
    )
    for purpose in vocabulary.STATUS_PURPOSES:
        if purpose not in etags:
            etags[purpose] = status_list_sign(purpose=purpose).etag
    return etags


# A list's bits by (purpose, ETag). The ETag hashes the signed text, which encodes the bits,
# and _sign_status_list writes bits, text and ETag together, so an ETag names one bitstring.
_list_bits: LRUCache = LRUCache(maxsize=8)
_list_bits_lock = threading.Lock()


def _bits_for(purpose: str, etag: str) -> bytes:
    with _list_bits_lock:
        bits = _list_bits.get((purpose, etag))
    if bits is None:
        bits, etag = (
            StatusList.objects.filter(purpose=purpose, number=1).values_list("bits", "etag").get()
        )
        bits = bytes(bits)
        with _list_bits_lock:
            _list_bits[(purpose, etag)] = bits
    return bits


def _random_free_index(etags: dict[str, str] | None = None, *, check_used: bool = True) -> int:
    """A random index whose bit is clear in every list and, with check_used, that no
    credential uses (without it, the unique constraint on status_index catches a used one
    at insert and credential_issue draws again with check_used).

    Random, not sequential: a sequential index would reveal issuance order and let a
    verifier link credentials issued together.
    """
    etags = etags if etags is not None else _ensure_status_lists()
    lists = _lists_bits(etags)

    def free(index: int) -> bool:
        return _clear_in(lists, index)

    for _ in range(64):
        index = secrets.randbelow(statuslist.LIST_BITS)
        if free(index) and (
            not check_used or not IssuedCredential.objects.filter(status_index=index).exists()
        ):
            return index
    # Nearly full: pick among what is left.
    used = set(IssuedCredential.objects.values_list("status_index", flat=True))
    left = [i for i in range(statuslist.LIST_BITS) if i not in used and free(i)]
    if not left:
        raise StatusListFullError("the status list has no free index left")
    return secrets.choice(left)


def _lists_bits(etags: dict[str, str]) -> list[bytes]:
    return [_bits_for(purpose, etag) for purpose, etag in etags.items()]


def _clear_in(lists: list[bytes], index: int) -> bool:
    return not any(statuslist.get_bit(bits, index) for bits in lists)


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


_ISSUANCE_COLUMNS = ("id", "did", "verification_method", "encrypted_jwk", "active", "trusted",
                     "created_at", "retired_at")


def _issuance_state_sql() -> tuple[str, list]:
    joins, params = status_etag_joins()
    columns = ", ".join(f"k.{c}" for c in _ISSUANCE_COLUMNS)
    sql = f"SELECT {columns}, r.etag, s.etag FROM {IssuerKey._meta.db_table} k {joins} WHERE k.active = %s"
    return sql, [*params, True]


# The issuance state this process read last: credential_issue starts signing with it and
# confirms it against the database while didkit signs (see there).
_last_issuance: tuple[IssuerKey, dict[str, str]] | None = None


def _issuance_state() -> tuple[IssuerKey, dict[str, str]]:
    """The active issuer key and {purpose: ETag} of both signed lists, in one (prepared)
    query when both exist (creating the key or signing a list on first use)."""
    global _last_issuance
    rows = prepared_rows(*_issuance_state_sql())
    if rows:
        n = len(_ISSUANCE_COLUMNS)
        issuer = IssuerKey.from_db(connection.alias, list(_ISSUANCE_COLUMNS), rows[0][:n])
        etags = status_etags(rows[0][n:])
    else:
        issuer, etags = issuer_get_or_create(), {}
    if len(etags) < len(vocabulary.STATUS_PURPOSES):  # a list not signed yet
        etags = _ensure_status_lists()
    _last_issuance = issuer, etags
    return issuer, etags


def _credential_insert(row: IssuedCredential) -> bool:
    """Inserts the row unless its status index is taken (then False). ON CONFLICT instead of
    catching IntegrityError: inside the caller's transaction a failed insert would abort it,
    and a savepoint around the insert costs two more round trips. A prepared statement: the
    document is a bound value, so PostgreSQL neither parses a new statement text nor
    plans it per credential."""
    fields = IssuedCredential._meta.concrete_fields
    qn = connection.ops.quote_name
    sql = (
        f"INSERT INTO {qn(IssuedCredential._meta.db_table)} ({', '.join(qn(f.column) for f in fields)})"
        f" VALUES ({', '.join(['%s'] * len(fields))})"
        f" ON CONFLICT ({qn(IssuedCredential._meta.get_field('status_index').column)}) DO NOTHING"
    )
    values = [f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields]
    inserted = prepared_execute(sql, values) == 1
    if inserted:
        row._state.adding, row._state.db = False, connection.alias
    return inserted


def _credential_document(
    *, issuer: IssuerKey, credential_type: str, subject: dict, now: datetime,
    expires_at: datetime | None, index: int,
) -> dict:
    revocation_url = vocabulary.status_list_url(vocabulary.REVOCATION)
    return {
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


def credential_issue(
    *,
    subject_did: str,
    credential_type: str,
    claims: dict,
    expires_at: datetime | None = None,
) -> IssuedCredential:
    """Issues, signs and stores an EnrolmentCredential or ConsentCredential.

    The one write is the credential row, a single INSERT in or out of the caller's
    transaction (signing a status list on first use is atomic on its own).

    Signing starts with the issuer key this process saw active last time, and the query
    that says which key is active now runs while didkit signs; if the key changed (a
    rotation elsewhere), the credential is signed again with the active one before
    anything is stored. A rotation that commits after that query and before the INSERT
    still stores the credential under the key just retired, as any issuance racing a
    rotation would: it verifies while that key stays trusted (rotate_issuer_key
    --distrust-previous is for a compromised key, whose credentials must be re-issued).
    """
    subject = _subject(subject_did=subject_did, credential_type=credential_type, claims=claims)
    now = timezone.now()
    if expires_at is not None and (timezone.is_naive(expires_at) or expires_at <= now):
        raise ClaimError(
            "expires_at must be a timezone-aware time in the future", field="expires_at"
        )
    guess = _last_issuance
    issuer, etags = guess if guess is not None else _issuance_state()
    confirmed = guess is None
    collisions = 0
    while collisions < 5:
        # The first draw skips the "no credential uses it" query (at most one credential in
        # LIST_BITS / issued collides); after a collision every draw asks.
        try:
            index = _random_free_index(etags, check_used=collisions > 0)
        except StatusList.DoesNotExist:
            if confirmed:
                raise
            issuer, etags = _issuance_state()  # the guess named lists that are gone
            confirmed = True
            continue
        credential = _credential_document(
            issuer=issuer, credential_type=credential_type, subject=subject, now=now,
            expires_at=expires_at, index=index,
        )
        try:
            jsonld.check(credential)
        except jsonld.JsonLdError as exc:
            raise ClaimError(str(exc), field=exc.term or "claims") from None
        signing = didkit_backend.issue_credential_begin(
            credential, jwk=_issuer_jwk(issuer), verification_method=issuer.verification_method
        )
        if not confirmed:
            confirmed = True
            try:
                current, etags = _issuance_state()  # while didkit signs
            except BaseException:
                signing()  # a database error: let the started signature finish first
                raise
            if (current.pk, current.encrypted_jwk) != (issuer.pk, issuer.encrypted_jwk):
                signing()  # a rotated-out key's signature: wait for it and drop it
                issuer = current
                continue
            issuer = current
            if not _clear_in(_lists_bits(etags), index):
                signing()
                continue  # the lists changed meanwhile and the index is taken
        signed = signing()
        row = IssuedCredential(
            id=signed["id"],
            subject_did=subject_did,
            type=credential_type,
            issuer_key=issuer,
            document=signed,
            status_index=index,
            issued_at=now,
            # As the document says it: whole seconds.
            expires_at=expires_at.replace(microsecond=0) if expires_at else None,
            proof_mac=attestation_mac(document_digest(signed)),
        )
        if _credential_insert(row):
            return row
        # A concurrent issuance took the same index first; draw again.
        collisions += 1
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
