"""Every write in the consent domain.

A state change, its audit row, its credential status and its pending ledger entry are
written in one transaction; the ledger's sealing task leaves only on commit.
"""

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.mail import send_mass_mail
from django.db import connection, transaction
from django.utils import timezone

from consent_portal import decisions, selectors
from consent_portal.models import (
    BulkCheck,
    Consent,
    ConsentCheck,
    ConsentEvent,
    ConsentRequest,
    Custodian,
    Erasure,
    Participant,
    Purpose,
    Sample,
    Study,
    StudyUse,
    Withdrawal,
    WithdrawalInstruction,
)
from identity import selectors as identity_selectors
from identity import services as identity_services
from ledger import selectors as ledger_selectors
from ledger import services as ledger_services

ETHICS_GROUP = "ethics-committee"


class ConsentStateError(ValueError):
    """The change asked for is not possible from the consent's current state."""


# Participants ----------------------------------------------------------------------------


def participant_enrol(*, user) -> Participant:
    """Give a user a did:key and an enrolment credential naming it.

    The portal holds the key (custodial) until the participant registers a key of their own
    from a browser (participant_key_register).
    """
    pseudonym = uuid.uuid4()
    with transaction.atomic():
        did_key = identity_services.did_create(holder=str(pseudonym))
        credential = identity_services.credential_issue(
            subject_did=did_key.did, credential_type="EnrolmentCredential", claims={}
        )
        participant = Participant.objects.create(
            pseudonym=pseudonym, user=user, did=did_key.did, enrolment_credential_id=credential.id
        )
        ledger_services.entry_append(
            kind="participant.enrolled",
            payload={
                "type": "participant.enrolled",
                "participant": str(participant.pseudonym),
                "credential": credential.id,
                "at": timezone.now().isoformat(),
            },
        )
    return participant


def participant_sign_up(*, username: str, password: str, email: str = "") -> Participant:
    """The e-mail address, if given, is only for requests from new studies; it never leaves
    this app."""
    with transaction.atomic():
        user = get_user_model().objects.create_user(username=username, password=password, email=email)
        return participant_enrol(user=user)


# Participant keys: custodial, self-held, devices ------------------------------------------


class KeyChangeError(ValueError):
    """A key registration or retirement was refused; the message says why."""


def _key_event(*, kind: str, participant: Participant, did: str, custody: str, now) -> None:
    ledger_services.entry_append(
        kind=kind,
        payload={
            "type": kind,
            "participant": str(participant.pseudonym),
            "did": did,
            "custody": custody,
            "at": now.isoformat(),
        },
    )


def participant_key_challenge(*, participant: Participant, domain: str) -> str:
    """A one-time nonce the browser signs (DID Auth) to register the key it holds."""
    return identity_services.challenge_create(
        purpose="did-auth", bound_to=str(participant.pseudonym), domain=domain
    ).nonce


def participant_key_register(
    *, participant: Participant, presentation: str, password: str, label: str = ""
) -> Participant:
    """Registers a key the participant's browser holds, after DID Auth and their password.

    The first self-held key ends custody: the portal's key for this participant is retired
    and its private part erased, so the portal can no longer sign for them. A later key is
    another device (for instance after losing one). Each change is a ledger entry, written
    in the same transaction.
    """
    if participant.user is None or not participant.user.check_password(password or ""):
        raise KeyChangeError("Enter your password again to change your keys.")
    now = timezone.now()
    with transaction.atomic():
        participant = Participant.objects.select_for_update().get(pk=participant.pk)
        try:
            redeemed = identity_services.presentation_redeem(
                token=presentation, purpose="did-auth", bound_to=str(participant.pseudonym)
            )
            if not redeemed["did"].startswith("did:key:zDn"):
                raise KeyChangeError("A browser key must be a P-256 did:key (did:key:zDn...).")
            did_key = identity_services.did_register(
                did=redeemed["did"], holder=str(participant.pseudonym), label=label
            )
        except identity_services.PresentationError as exc:
            raise KeyChangeError(f"The key could not be verified ({exc.check}): {exc}") from None
        except identity_services.CredentialError as exc:
            raise KeyChangeError(f"The key could not be registered: {exc}") from None
        _key_event(kind="participant.key_added", participant=participant, did=did_key.did,
                   custody=Participant.SELF_CUSTODY, now=now)
        if participant.key_custody == Participant.PORTAL_CUSTODY:
            for key in identity_selectors.holder_keys(holder=str(participant.pseudonym)):
                if key.custody == Participant.PORTAL_CUSTODY:
                    identity_services.did_retire(did=key.did, holder=str(participant.pseudonym))
                    _key_event(kind="participant.key_retired", participant=participant, did=key.did,
                               custody=Participant.PORTAL_CUSTODY, now=now)
            participant.key_custody = Participant.SELF_CUSTODY
        participant.did = did_key.did
        participant.save(update_fields=["did", "key_custody"])
    return participant


def participant_key_retire(*, participant: Participant, did: str, password: str) -> Participant:
    """Retires one of the participant's browser keys (a lost or replaced device)."""
    if participant.user is None or not participant.user.check_password(password or ""):
        raise KeyChangeError("Enter your password again to change your keys.")
    now = timezone.now()
    with transaction.atomic():
        participant = Participant.objects.select_for_update().get(pk=participant.pk)
        live = {key.did: key for key in identity_selectors.holder_keys(holder=str(participant.pseudonym))}
        if did not in live:
            raise KeyChangeError("No such key, or it is already retired.")
        identity_services.did_retire(did=did, holder=str(participant.pseudonym))
        _key_event(kind="participant.key_retired", participant=participant, did=did,
                   custody=live[did].custody, now=now)
        if participant.did == did:
            # New credentials name the newest live key, if one is left.
            rest = identity_selectors.holder_keys(holder=str(participant.pseudonym)).first()
            if rest is not None:
                participant.did = rest.did
                participant.save(update_fields=["did"])
    return participant


# Signed consent decisions ------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionSignature:
    """Who signed a consent decision, and the signed decision (a JWT VP)."""

    signed_by: str
    token: str


def _decision(*, participant: Participant, action: str, purpose: Purpose, consent_id: int | None) -> dict:
    return {
        "type": "ConsentDecision",
        "participant": participant.did,
        "action": action,
        "purpose": purpose.slug,
        "permission": purpose.permission_id,
        "consent": consent_id,
    }


def decision_challenge_create(
    *, participant: Participant, action: str, domain: str, purpose: Purpose | None = None,
    consent_id: int | None = None,
) -> dict:
    """The exact decision the participant's browser is to sign, with a one-time nonce:
    {"nonce", "domain", "decision"}. The browser signs "decision" as it is, in a JWT VP
    with that nonce, and the domain as aud."""
    if action != "grant":
        consent = Consent.objects.select_related("purpose").filter(participant=participant, pk=consent_id).first()
        if consent is None:
            raise Consent.DoesNotExist("No such consent for this participant.")
        purpose = consent.purpose
    elif purpose is None or consent_id is not None:
        raise ValueError("A grant names a purpose and no consent.")
    challenge = identity_services.challenge_create(
        purpose="decision", bound_to=str(participant.pseudonym), domain=domain,
        expected=_decision(participant=participant, action=action, purpose=purpose, consent_id=consent_id),
    )
    return {"nonce": challenge.nonce, "domain": domain, "decision": challenge.expected["decision"]}


def _decision_signature(
    *, participant: Participant, action: str, purpose: Purpose, consent_id: int | None,
    signed_decision: str | None, now,
) -> DecisionSignature:
    expected = _decision(participant=participant, action=action, purpose=purpose, consent_id=consent_id)
    return _signature(participant=participant, expected=expected, signed_decision=signed_decision, now=now)


def _signature(*, participant: Participant, expected: dict, signed_decision: str | None, now) -> DecisionSignature:
    """A self-held key must have signed this exact decision (`expected`, as a challenge fixed
    it) in the participant's browser; otherwise the portal signs it with the custodial key,
    and the record says so. Consent decisions and withdrawals both come through here."""
    if participant.key_custody == Participant.SELF_CUSTODY:
        if not signed_decision:
            raise ConsentStateError("You hold your own key: sign this decision in your browser.")
        signers = set(selectors.signing_dids(participant=participant))
        try:
            redeemed = identity_services.presentation_redeem(
                token=signed_decision, purpose="decision", bound_to=str(participant.pseudonym), signers=signers
            )
        except identity_services.PresentationError as exc:
            raise ConsentStateError(f"Your signed decision was refused ({exc.check}): {exc}") from None
        # The challenge fixed the whole decision; it must also be the change being applied.
        if {key: redeemed["decision"].get(key) for key in expected} != expected:
            raise ConsentStateError("Your signed decision was refused (payload): it is for another change.")
        return DecisionSignature(signed_by=ConsentEvent.PARTICIPANT_KEY, token=signed_decision)
    if signed_decision:
        raise ConsentStateError("Register your key on the My keys page before signing decisions.")
    decision = {
        **expected,
        "nonce": secrets.token_urlsafe(18),
        "issued_at": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "domain": urlsplit(settings.SITE_URL).netloc,
    }
    token = identity_services.decision_sign_custodial(did=participant.did, decision=decision)
    return DecisionSignature(signed_by=ConsentEvent.CUSTODIAL_KEY, token=token)


# Consents --------------------------------------------------------------------------------


# A change the portal makes by itself, not on a decision the participant signed.
SCHEDULED_RESUME = DecisionSignature(signed_by="scheduled-resume", token="")


def _consent_event_record(*, consent: Consent, action: str, now, signature: DecisionSignature) -> ConsentEvent:
    token, signed_by = signature.token, signature.signed_by
    payload = {
        "type": "consent.event",
        "participant": str(consent.participant.pseudonym),
        "purpose": consent.purpose.slug,
        "permission": consent.purpose.permission_id,
        "action": action,
        "state": consent.state,
        "credential": consent.credential_id,
        "at": now.isoformat(),
        "signed_by": signed_by,
    }
    if token:
        # The ledger holds the hash; the signed decision itself stays with the event.
        payload["decision_sha256"] = hashlib.sha256(token.encode()).hexdigest()
    entry = ledger_services.entry_append(kind=f"consent.{action}", payload=payload)
    return ConsentEvent.objects.create(
        consent=consent, action=action, state_after=consent.state, created_at=now, ledger_entry=entry,
        signed_by=signed_by, decision_jwt=token,
    )


def consent_grant(*, participant: Participant, purpose: Purpose, signed_decision: str | None = None) -> Consent:
    """Grant consent for a purpose: a new consent credential, recorded on the ledger.

    With a self-held key, `signed_decision` is the participant's JWT VP over the decision
    (decision_challenge_create); without one, the portal signs with the custodial key.
    """
    now = timezone.now()
    with transaction.atomic():
        # Lock the participant so two grants for the same purpose cannot race (and read its
        # custody and DID as they are now).
        participant = Participant.objects.select_for_update().get(pk=participant.pk)
        if Consent.objects.filter(participant=participant, purpose=purpose).exclude(
            state=Consent.REVOKED
        ).exists():
            raise ConsentStateError(f"Consent for '{purpose.title}' is already in place.")
        credential = identity_services.credential_issue(
            subject_did=participant.did,
            credential_type="ConsentCredential",
            claims=selectors.purpose_claims(purpose=purpose),
        )
        consent = Consent.objects.create(
            participant=participant,
            purpose=purpose,
            state=Consent.GRANTED,
            credential_id=credential.id,
            granted_at=now,
            updated_at=now,
        )
        signature = _decision_signature(
            participant=participant, action=ConsentEvent.GRANT, purpose=purpose, consent_id=None,
            signed_decision=signed_decision, now=now,
        )
        _consent_event_record(consent=consent, action=ConsentEvent.GRANT, now=now, signature=signature)
    return consent


# action -> (states it may start from, state it leaves, the credential status change)
_TRANSITIONS = {
    ConsentEvent.SUSPEND: ({Consent.GRANTED}, Consent.SUSPENDED, identity_services.credential_suspend),
    ConsentEvent.RESUME: ({Consent.SUSPENDED}, Consent.GRANTED, identity_services.credential_resume),
    ConsentEvent.REVOKE: (
        {Consent.GRANTED, Consent.SUSPENDED},
        Consent.REVOKED,
        identity_services.credential_revoke,
    ),
}


def consent_change(
    *, participant: Participant, consent_id: int, action: str, suspend_until: datetime | None = None,
    signed_decision: str | None = None,
) -> Consent:
    """Suspend, resume or revoke one of this participant's consents.

    A suspension may carry an end (`suspend_until`); the beat sweep resumes it then. The
    decision is signed as in consent_grant.
    """
    if action not in _TRANSITIONS:
        raise ConsentStateError(f"Unknown action '{action}'.")
    allowed_from = _TRANSITIONS[action][0]
    now = timezone.now()
    if suspend_until is not None and (action != ConsentEvent.SUSPEND or suspend_until <= now):
        raise ConsentStateError("A suspension end must be in the future, and only a suspension has one.")
    with transaction.atomic():
        # Filtering by participant is what keeps one participant out of another's consents.
        consent = (
            Consent.objects.select_for_update()
            .select_related("purpose", "participant")
            .filter(participant=participant, pk=consent_id)
            .first()
        )
        if consent is None:
            raise Consent.DoesNotExist("No such consent for this participant.")
        if consent.state not in allowed_from:
            raise ConsentStateError(f"A {consent.state} consent cannot be {action}d.")
        signature = _decision_signature(
            participant=consent.participant, action=action, purpose=consent.purpose, consent_id=consent.pk,
            signed_decision=signed_decision, now=now,
        )
        _consent_transition(
            consent=consent, action=action, now=now, suspend_until=suspend_until, signature=signature
        )
    return consent


def _consent_transition(
    *, consent: Consent, action: str, now, signature: DecisionSignature, suspend_until=None
) -> None:
    """The one place a live consent changes state: its row, its credential's status bit,
    its event and ledger entry. Callers hold the consent's row lock and checked the state."""
    _, new_state, set_status = _TRANSITIONS[action]
    consent.state = new_state
    consent.updated_at = now
    consent.suspended_until = suspend_until
    consent.save(update_fields=["state", "updated_at", "suspended_until"])
    set_status(credential_id=consent.credential_id)
    _consent_event_record(consent=consent, action=action, now=now, signature=signature)


# Studies ---------------------------------------------------------------------------------


def study_submit(
    *, identifier: str, title: str, institution: str, commercial: bool, uses: list[dict],
    summary: str = "", **facts,
) -> Study:
    """Register a study, its facts (for_profit, countries, collaborators, investigators,
    irb_reference, will_publish, returns_derived_data, methods_development) and the DUO uses
    it asks for; each use awaits the committee."""
    unknown = set(facts) - STUDY_FACTS
    if unknown:
        raise ValueError(f"Unknown study facts: {sorted(unknown)}")
    with transaction.atomic():
        study = Study.objects.create(
            identifier=identifier, title=title, institution=institution,
            commercial=commercial, summary=summary, **facts,
        )
        for use in uses:
            StudyUse.objects.create(
                study=study,
                permission_id=use["permission"],
                disease_id=use.get("disease_id", ""),
                disease_label=use.get("disease_label", ""),
            )
    return study


STUDY_FACTS = {
    "for_profit", "countries", "collaborators", "investigators", "irb_reference",
    "will_publish", "returns_derived_data", "methods_development",
}


def study_use_decide(*, use_id: int, approve: bool, member, expires_on=None) -> StudyUse:
    """Approve (until `expires_on`, if given) or reject one use. Approval asks the
    participants who have not granted a covering consent (on commit, in a task)."""
    if approve and expires_on is not None and expires_on <= timezone.now().date():
        raise ValueError("An approval must expire in the future.")
    with transaction.atomic():
        use = StudyUse.objects.select_for_update().select_related("study").get(pk=use_id)
        use.status = StudyUse.APPROVED if approve else StudyUse.REJECTED
        use.expires_on = expires_on if approve else None
        use.decided_by = member
        use.decided_at = timezone.now()
        use.save(update_fields=["status", "expires_on", "decided_by", "decided_at"])
        if approve:
            from consent_portal import tasks

            transaction.on_commit(lambda: tasks.consent_requests_send.delay(use_id=use.pk))
    return use


def ethics_member_create(*, username: str, password: str):
    with transaction.atomic():
        user = get_user_model().objects.create_user(username=username, password=password)
        group, _ = Group.objects.get_or_create(name=ETHICS_GROUP)
        user.groups.add(group)
    return user


# Custodians and samples ------------------------------------------------------------------


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def custodian_create(*, name: str, token: str | None = None) -> tuple[Custodian, str]:
    """Create a custodian; returns the token, which is stored only as a hash."""
    token = token or secrets.token_urlsafe(32)
    custodian = Custodian.objects.create(name=name, token_hash=token_hash(token))
    return custodian, token


def sample_register(*, custodian: Custodian, identifier: str, participant: Participant, kind: str) -> Sample:
    """Raises IntegrityError when this custodian already registered the identifier."""
    with transaction.atomic():
        return Sample.objects.create(
            custodian=custodian, identifier=identifier, participant=participant, kind=kind
        )


# Consent checks --------------------------------------------------------------------------


@dataclass
class CheckOutcome:
    check: ConsentCheck
    # "unknown_sample" / "unknown_study" when the question named something not on record.
    unknown: str | None = None


def _approval_reasons(*, study: str, purpose: str, found: bool, expires_on, today) -> list:
    """Why a study may not receive a permit for `purpose`: no approved use, or one expired."""
    if not found:
        return [decisions.Reason(
            "study_not_approved",
            f"Study '{study}' is not approved by the ethics committee for {purpose}.",
        )]
    if expires_on is not None and expires_on < today:
        return [decisions.Reason(
            "study_approval_expired",
            f"Study '{study}' was approved for {purpose} until {expires_on.isoformat()}.",
        )]
    return []


def _approved_use(*, study: Study, purpose: str, today) -> tuple[StudyUse | None, list]:
    """The study's approved, unexpired use for `purpose`, or the reason there is none."""
    use = study.uses.filter(permission_id=purpose, status=StudyUse.APPROVED).first()
    reasons = _approval_reasons(study=study.identifier, purpose=purpose, found=use is not None,
                                expires_on=use.expires_on if use else None, today=today)
    return (None if reasons else use), reasons


def _use_facts(*, study: Study, use: StudyUse, today) -> decisions.Use:
    return decisions.Use(
        permission=use.permission_id,
        study=selectors.study_facts(study=study),
        today=today,
        disease_lineage=selectors.disease_lineage(disease_id=use.disease_id),
    )


def consent_check(*, custodian: Custodian, sample: str, study: str, purpose: str) -> CheckOutcome:
    """Answer whether `custodian` may release `sample` to `study` for `purpose` (a DUO id).

    The answer names its reasons and the evidence a custodian can verify later; the check
    itself is recorded on the ledger. `purpose` must be a known DUO permission id (the
    caller validates that). Reads: one query for the sample, study, approval and consents
    (selectors.check_facts), one for the named credential and its status, and the ledger
    receipt of the consent's latest event; then the check and its ledger entry are written
    together (_check_record).
    """
    now = timezone.now()
    today = now.date()
    facts = selectors.check_facts(custodian_id=custodian.pk, sample=sample, study=study, purpose=purpose)
    unknown = None
    named = None
    decision = ConsentCheck.DENY
    if facts.sample_id is None:
        unknown = "unknown_sample"
        reasons = [decisions.Reason(unknown, f"No sample '{sample}' is registered to this custodian.")]
    elif facts.study is None:
        unknown = "unknown_study"
        reasons = [decisions.Reason(unknown, f"No study '{study}' is registered.")]
    else:
        reasons = _approval_reasons(study=study, purpose=purpose, found=facts.use_id is not None,
                                    expires_on=facts.use_expires_on, today=today)
        if not reasons:
            use = decisions.Use(permission=purpose, study=facts.study, today=today,
                                disease_lineage=selectors.disease_lineage(disease_id=facts.use_disease_id))
            by_id = {c.view.consent_id: c for c in facts.consents}
            decision, reasons, view = decisions.decide([c.view for c in facts.consents], use)
            named = by_id[view.consent_id] if view is not None else None
    evidence = _check_evidence(sample=sample, study=study, purpose=purpose, consent=named)
    if decision == ConsentCheck.PERMIT and not evidence["consent"]["verification"]["verified"]:
        # The database says yes; the credential must say so too (signature, trusted issuer,
        # expiry, status lists), or the custodian gets no permit.
        failed = {k: v for k, v in evidence["consent"]["verification"]["checks"].items() if v not in ("ok", "active")}
        decision = ConsentCheck.DENY
        reasons = [decisions.Reason("credential_not_verified",
                                    f"The consent credential does not verify: {failed}.")]
    check = ConsentCheck(
        custodian=custodian,
        sample_identifier=sample,
        study_identifier=study,
        purpose_id=purpose,
        decision=decision,
        reasons=[r.as_dict() for r in reasons],
        evidence=evidence,
        created_at=now,
    )
    _check_record(check, payload={
        "type": "consent.check",
        "check": str(check.id),
        "custodian": custodian.pk,
        "sample": facts.sample_id,
        "study": study,
        "purpose": purpose,
        "decision": decision,
        "reasons": [r.code for r in reasons],
        "credential": named.credential_id if named else None,
        "at": now.isoformat(),
    })
    return CheckOutcome(check=check, unknown=unknown)


def _check_record(check: ConsentCheck, *, payload: dict) -> None:
    """Stores the check with its ledger entry, both or neither.

    On PostgreSQL one statement inserts both (the entry in a data-modifying WITH), so an
    autocommitted check costs one round trip and one WAL flush instead of BEGIN, two
    INSERTs and COMMIT. Elsewhere (SQLite) the same two rows in one transaction.
    """
    if connection.vendor != "postgresql":
        with transaction.atomic():
            check.ledger_entry = ledger_services.entry_append(kind="consent.check", payload=payload)
            check.save(force_insert=True)
        return
    fields = [f for f in ConsentCheck._meta.concrete_fields if f.attname != "ledger_entry_id"]
    qn = connection.ops.quote_name
    entry_column = qn(ConsentCheck._meta.get_field("ledger_entry").column)
    (check.ledger_entry_id,) = ledger_services.entry_append_with(
        kind="consent.check", payload=payload, created_at=check.created_at,
        sql=(f"INSERT INTO {qn(ConsentCheck._meta.db_table)} ({', '.join(qn(f.column) for f in fields)},"
             f" {entry_column}) VALUES ({', '.join(['%s'] * len(fields))}, (SELECT id FROM e))"
             f" RETURNING {entry_column}"),
        params=[f.get_db_prep_save(getattr(check, f.attname), connection) for f in fields],
    )
    check._state.adding, check._state.db = False, connection.alias


BULK_LIMIT = 10_000


def consent_check_bulk(*, custodian: Custodian, samples: list[str], study: Study, purpose: str) -> dict:
    """Answer for many samples of one custodian, one study and one purpose, in one pass.

    The queries do not grow with the number of samples. The ledger records one entry for
    the whole answer: the SHA-256 of its canonical JSON, so a custodian who keeps the
    answer can prove what it was told. The answer carries those exact bytes (results_json),
    serialized once, for the response to send as they are.
    """
    now = timezone.now()
    today = now.date()
    use, study_reasons = _approved_use(study=study, purpose=purpose, today=today)
    participants = selectors.sample_participants(custodian_id=custodian.pk, identifiers=samples)
    consents = selectors.consent_shapes_by_participant(participant_ids=set(participants.values())) if use else None
    use_facts = _use_facts(study=study, use=use, today=today) if use else None
    named_ids = set()
    answers = []
    study_reason_dicts = [r.as_dict() for r in study_reasons]
    # Participants with the same consents (purposes, states, grant days) get the same answer:
    # decided, and their views built, once per such shape, not once per sample.
    by_shape: dict[tuple, tuple] = {}
    for identifier in samples:
        named = None
        if identifier not in participants:
            decision, reasons = "deny", [{
                "code": "unknown_sample",
                "message": f"No sample '{identifier}' is registered to this custodian."}]
        elif use is None:
            decision, reasons = "deny", study_reason_dicts
        else:
            ids, shape = consents.by_participant[participants[identifier]]
            if shape not in by_shape:
                views = consents.views(ids, shape)
                decision, reasons, chosen = decisions.decide(views, use_facts)
                position = next(i for i, v in enumerate(views) if v is chosen) if chosen else None
                by_shape[shape] = (decision, [r.as_dict() for r in reasons], position)
            decision, reasons, position = by_shape[shape]
            if position is not None:
                named = ids[position]
                named_ids.add(named)
        answers.append((identifier, decision, reasons, named))
    evidence = selectors.consent_evidence_bulk(consent_ids=named_ids)
    results = [
        {
            "sample": identifier,
            "decision": decision,
            "reasons": reasons,
            "evidence": evidence.get(named) if named is not None else None,
        }
        for identifier, decision, reasons, named in answers
    ]
    results_json = canonical_json(results)
    digest = hashlib.sha256(results_json).hexdigest()
    permits = sum(1 for r in results if r["decision"] == "permit")
    with transaction.atomic():
        bulk = BulkCheck(
            custodian=custodian, study_identifier=study.identifier, purpose_id=purpose,
            count=len(results), permits=permits, results_sha256=digest, created_at=now,
        )
        bulk.ledger_entry = ledger_services.entry_append(
            kind="consent.bulk_check",
            payload={
                "type": "consent.bulk_check",
                "check": str(bulk.id),
                "custodian": custodian.pk,
                "study": study.identifier,
                "purpose": purpose,
                "count": len(results),
                "permits": permits,
                "results_sha256": digest,
                "at": now.isoformat(),
            },
        )
        bulk.save(force_insert=True)
    return {"check": str(bulk.id), "study": study.identifier, "purpose": purpose, "count": len(results),
            "permits": permits, "results_sha256": digest, "results_json": results_json, "bulk": bulk}


def canonical_json(value) -> bytes:
    """The bytes a digest is taken over: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _check_evidence(*, sample: str, study: str, purpose: str, consent: selectors.CheckConsent | None) -> dict:
    evidence = {"sample": sample, "study": study, "purpose": purpose, "consent": None}
    if consent is None:
        return evidence
    # The same verification the public verify endpoint runs.
    credential = identity_selectors.credential_evidence(credential_id=consent.credential_id)
    if credential is None:
        credential = {"credential": None, "credential_status": None, "verification": {
            "verified": False, "checks": {"credential": "failed: not found"},
            "errors": [f"credential {consent.credential_id} is not on record"]}}
    receipt = None
    if consent.latest_entry_id is not None:
        receipt = ledger_selectors.entry_receipt(entry_id=consent.latest_entry_id)
    evidence["consent"] = {
        "purpose": consent.purpose_slug,
        "state": consent.view.state,
        **credential,
        "latest_event": {
            "action": consent.latest_action,
            "at": consent.latest_at.isoformat() if consent.latest_at else None,
            "ledger": receipt or {"sealed": False, "detail": "The event is recorded but not sealed yet."},
        },
    }
    return evidence


# Dynamic consent: requests from approved studies -------------------------------------------


def consent_requests_create(*, use_id: int) -> int:
    """Ask every participant without a covering consent to consider an approved use.

    Participants who ever granted a covering consent (even if they since revoked it) or who
    withdrew at any level are not asked. Returns how many were asked; each with an e-mail
    address on file gets one through Django's mail backend.
    """
    use = StudyUse.objects.select_related("study").get(pk=use_id)
    today = timezone.now().date()
    if use.status != StudyUse.APPROVED or (use.expires_on and use.expires_on < today):
        return 0
    facts = _use_facts(study=use.study, use=use, today=today)
    purpose = selectors.purpose_for_use(use=facts)
    if purpose is None:
        return 0
    candidates = list(
        Participant.objects.filter(user__isnull=False, withdrawals__isnull=True)
        .exclude(requests__use=use)
        .values_list("pk", flat=True)
    )
    views = selectors.consent_views_by_participant(participant_ids=candidates)
    asked = [
        pid for pid in candidates
        if not any(decisions.permission_covers(v.permission, facts.permission) for v in views[pid])
    ]
    with transaction.atomic():
        ConsentRequest.objects.bulk_create(
            [ConsentRequest(use=use, participant_id=pid, purpose=purpose) for pid in asked],
            ignore_conflicts=True,
        )
    emails = list(
        Participant.objects.filter(pk__in=asked).exclude(user__email="").values_list("user__email", flat=True)
    )
    if emails:
        send_mass_mail(
            [
                (
                    "A study asks for your consent",
                    f"The study “{use.study.title}” ({use.study.institution}) has been approved by the "
                    f"ethics committee for “{purpose.title}”. You have not consented to this use. "
                    "Log in to the portal to read about it and answer; you are free to say no.",
                    None,
                    [email],
                )
                for email in emails
            ],
            fail_silently=False,
        )
    return len(asked)


def consent_request_answer(
    *, participant: Participant, request_id: int, grant: bool, signed_decision: str | None = None
) -> ConsentRequest:
    """The participant's answer; a yes grants the requested purpose through consent_grant,
    signed in the browser when the participant holds their own key."""
    with transaction.atomic():
        request = (
            ConsentRequest.objects.select_for_update().select_related("purpose")
            .filter(pk=request_id, participant=participant).first()
        )
        if request is None:
            raise ConsentRequest.DoesNotExist("No such request for this participant.")
        if request.status != ConsentRequest.OPEN:
            raise ConsentStateError("This request has already been answered.")
        if grant:
            live = Consent.objects.filter(participant=participant, purpose=request.purpose).exclude(
                state=Consent.REVOKED
            )
            if not live.exists():
                consent_grant(participant=participant, purpose=request.purpose, signed_decision=signed_decision)
        request.status = ConsentRequest.GRANTED if grant else ConsentRequest.DECLINED
        request.answered_at = timezone.now()
        request.save(update_fields=["status", "answered_at"])
    return request


# Suspensions that end by themselves -------------------------------------------------------------


def consents_resume_due(*, now=None) -> int:
    """Resume every suspension whose end has passed; run by beat, safe to run twice."""
    now = now or timezone.now()
    due = list(
        Consent.objects.filter(state=Consent.SUSPENDED, suspended_until__lte=now).values_list("pk", flat=True)
    )
    resumed = 0
    for consent_id in due:
        with transaction.atomic():
            consent = Consent.objects.select_for_update().select_related("purpose", "participant").get(pk=consent_id)
            if consent.state != Consent.SUSPENDED or not consent.suspended_until or consent.suspended_until > now:
                continue  # changed since we looked
            _consent_transition(consent=consent, action=ConsentEvent.RESUME, now=now, signature=SCHEDULED_RESUME)
        resumed += 1
    return resumed


# Withdrawal and erasure ------------------------------------------------------------------------


_WITHDRAWAL_ACTIONS = {
    Withdrawal.NO_CONTACT: None,
    Withdrawal.NO_ACCESS: WithdrawalInstruction.STOP_ACCESS,
    Withdrawal.NO_USE: WithdrawalInstruction.DESTROY,
}


def _withdrawal_decision(*, participant: Participant, level: str) -> dict:
    return {"type": "WithdrawalDecision", "participant": participant.did, "level": level}


def withdrawal_challenge_create(*, participant: Participant, level: str, domain: str) -> dict:
    """The exact withdrawal the participant's browser is to sign, with a one-time nonce, in
    decision_challenge_create's shape: {"nonce", "domain", "decision"}."""
    if level not in _WITHDRAWAL_ACTIONS:
        raise ValueError(f"Unknown withdrawal level '{level}'.")
    challenge = identity_services.challenge_create(
        purpose="decision", bound_to=str(participant.pseudonym), domain=domain,
        expected=_withdrawal_decision(participant=participant, level=level),
    )
    return {"nonce": challenge.nonce, "domain": domain, "decision": challenge.expected["decision"]}


def participant_withdraw(*, participant: Participant, level: str, signed_decision: str | None = None) -> Withdrawal:
    """Withdraw at one level. No further access or use revokes every live consent and tells
    each custodian holding the participant's samples what to do; no further use asks them to
    destroy samples and data.

    The withdrawal is a signed decision like a consent change: with a self-held key,
    `signed_decision` is the participant's JWT VP over it (withdrawal_challenge_create);
    without one, the portal signs with the custodial key. The withdrawal and every consent
    it revokes carry that signature; their ledger entries carry its SHA-256.
    """
    if level not in _WITHDRAWAL_ACTIONS:
        raise ValueError(f"Unknown withdrawal level '{level}'.")
    now = timezone.now()
    with transaction.atomic():
        # Lock the participant, and read its custody and DID as they are now.
        participant = Participant.objects.select_for_update().get(pk=participant.pk)
        signature = _signature(
            participant=participant, expected=_withdrawal_decision(participant=participant, level=level),
            signed_decision=signed_decision, now=now,
        )
        action = _WITHDRAWAL_ACTIONS[level]
        if action is not None:
            live = Consent.objects.select_for_update().select_related("purpose", "participant").filter(
                participant=participant
            ).exclude(state=Consent.REVOKED)
            for consent in live:
                _consent_transition(consent=consent, action=ConsentEvent.REVOKE, now=now, signature=signature)
        ConsentRequest.objects.filter(participant=participant, status=ConsentRequest.OPEN).update(
            status=ConsentRequest.DECLINED, answered_at=now
        )
        withdrawal = Withdrawal(
            participant=participant, level=level, created_at=now,
            signed_by=signature.signed_by, decision_jwt=signature.token,
        )
        withdrawal.ledger_entry = ledger_services.entry_append(
            kind="participant.withdrew",
            payload={
                "type": "participant.withdrew",
                "withdrawal": str(withdrawal.id),
                "participant": str(participant.pseudonym),
                "level": level,
                "at": now.isoformat(),
                "signed_by": signature.signed_by,
                # The ledger holds the hash; the signed decision itself stays with the withdrawal.
                "decision_sha256": hashlib.sha256(signature.token.encode()).hexdigest(),
            },
        )
        withdrawal.save(force_insert=True)
        if action is not None:
            WithdrawalInstruction.objects.bulk_create(
                [
                    WithdrawalInstruction(withdrawal=withdrawal, sample=sample, action=action, created_at=now)
                    for sample in participant.samples.order_by("registered_at")
                ]
            )
    return withdrawal


def withdrawal_instruction_confirm(*, custodian: Custodian, seq: int) -> WithdrawalInstruction:
    """A custodian confirms it carried out an instruction; the confirmation is sealed."""
    now = timezone.now()
    with transaction.atomic():
        instruction = (
            WithdrawalInstruction.objects.select_for_update()
            .select_related("sample", "withdrawal__participant")
            .filter(seq=seq, sample__custodian=custodian)
            .first()
        )
        if instruction is None:
            raise WithdrawalInstruction.DoesNotExist(f"No instruction {seq} for this custodian.")
        if instruction.confirmed_at is not None:
            raise ConsentStateError(f"Instruction {seq} was already confirmed.")
        instruction.confirmed_at = now
        instruction.confirmation_entry = ledger_services.entry_append(
            kind="withdrawal.confirmed",
            payload={
                "type": "withdrawal.confirmed",
                "instruction": instruction.seq,
                "withdrawal": str(instruction.withdrawal_id),
                "participant": str(instruction.withdrawal.participant.pseudonym),
                "sample": str(instruction.sample_id),
                "custodian": custodian.pk,
                "action": instruction.action,
                "at": now.isoformat(),
            },
        )
        instruction.save(update_fields=["confirmed_at", "confirmation_entry"])
    return instruction


def participant_erase(*, participant: Participant, signed_decision: str | None = None) -> Erasure:
    """Right to erasure: withdraw from all use, then delete the person (login, name, e-mail)
    so the pseudonym on the ledger no longer points to anyone. The ledger is untouched.

    The withdrawal at no further use, when one is still needed, is signed as in
    participant_withdraw: `signed_decision` is the participant's signed withdrawal at that
    level when they hold their own key."""
    with transaction.atomic():
        if not selectors.withdrawn_from_use(participant=participant):
            participant_withdraw(participant=participant, level=Withdrawal.NO_USE, signed_decision=signed_decision)
        user = participant.user
        participant.user = None
        participant.save(update_fields=["user"])
        if user is not None:
            user.delete()
        erasure = Erasure.objects.create(participant=participant, erased_at=timezone.now())
    return erasure
