"""Every write in the consent domain.

A state change, its audit row, its credential status and its pending ledger entry are
written in one transaction; the ledger's sealing task leaves only on commit.
"""

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.mail import send_mass_mail
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext, gettext_lazy

from consent_portal import decisions, plain, selectors
from consent_portal.models import (
    BulkCheck,
    Consent,
    ConsentCheck,
    ConsentEvent,
    ConsentRequest,
    Custodian,
    DonationCode,
    Enrolment,
    Erasure,
    Participant,
    Purpose,
    Rejoin,
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


class InstructionClosedError(ConsentStateError):
    """A withdrawal instruction that can no longer be confirmed; `code` says why."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.code = code


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
            payload={"type": "participant.enrolled", "at": timezone.now().isoformat()},
            committed={"participant": str(participant.pseudonym), "credential": credential.id},
            subject=str(participant.pseudonym),
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
        payload={"type": kind, "custody": custody, "at": now.isoformat()},
        committed={"participant": str(participant.pseudonym), "did": did},
        subject=str(participant.pseudonym),
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
        consent = Consent.objects.select_related("purpose", "participant").filter(
            participant=participant, pk=consent_id).first()
        if consent is None:
            raise Consent.DoesNotExist("No such consent for this participant.")
        purpose = consent.purpose
        refusal = consent_change_refusal(consent=consent, action=action)
    elif purpose is None or consent_id is not None:
        raise ValueError("A grant names a purpose and no consent.")
    else:
        refusal = grant_refusal(participant=participant, purpose=purpose)
    if refusal:  # refused before the browser is asked to sign what would be refused anyway
        raise ConsentStateError(refusal)
    return _challenge(participant=participant, domain=domain, expected=_decision(
        participant=participant, action=action, purpose=purpose, consent_id=consent_id))


def _challenge(*, participant: Participant, domain: str, expected: dict) -> dict:
    """A one-time nonce bound to the participant and the exact decision (`expected`) their
    browser is to sign: {"nonce", "domain", "decision"}. Consent decisions, withdrawals and
    rejoins are all challenged here."""
    challenge = identity_services.challenge_create(
        purpose="decision", bound_to=str(participant.pseudonym), domain=domain, expected=expected)
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
            raise ConsentStateError(gettext("You hold your own key: sign this decision in your browser."))
        signers = set(selectors.signing_dids(participant=participant))
        try:
            redeemed = identity_services.presentation_redeem(
                token=signed_decision, purpose="decision", bound_to=str(participant.pseudonym), signers=signers
            )
        except identity_services.PresentationError as exc:
            raise ConsentStateError(gettext("Your signed decision was refused (%(check)s): %(reason)s")
                                    % {"check": exc.check, "reason": exc}) from None
        # The challenge fixed the whole decision; it must also be the change being applied.
        if {key: redeemed["decision"].get(key) for key in expected} != expected:
            raise ConsentStateError(gettext("Your signed decision was refused (payload): it is for another change."))
        return DecisionSignature(signed_by=ConsentEvent.PARTICIPANT_KEY, token=signed_decision)
    if signed_decision:
        raise ConsentStateError(gettext("Register your key on the My keys page before signing decisions."))
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


def _decision_digest(token: str) -> dict:
    """The signed decision's SHA-256, to commit to (the decision itself stays with its
    record). Committed, not clear: one withdrawal revokes every consent under one signed
    decision, and a digest in the clear would tie those entries together, and to the
    withdrawal a custodian receives."""
    return {"decision_sha256": hashlib.sha256(token.encode()).hexdigest()} if token else {}


def _consent_event_record(*, consent: Consent, action: str, now, signature: DecisionSignature) -> ConsentEvent:
    token, signed_by = signature.token, signature.signed_by
    pseudonym = str(consent.participant.pseudonym)
    payload = {
        "type": "consent.event",
        "purpose": consent.purpose.slug,
        "permission": consent.purpose.permission_id,
        "action": action,
        "state": consent.state,
        "at": now.isoformat(),
        "signed_by": signed_by,
    }
    entry = ledger_services.entry_append(
        kind=f"consent.{action}", payload=payload,
        committed={"participant": pseudonym, "credential": consent.credential_id, **_decision_digest(token)},
        subject=pseudonym,
    )
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
        refusal = grant_refusal(participant=participant, purpose=purpose)
        if refusal:
            raise ConsentStateError(refusal)
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
        _requests_close_covered(participant=participant, now=now)
    return consent


def grant_refusal(*, participant: Participant, purpose: Purpose | None = None) -> str | None:
    """Why this participant cannot give consent now (for `purpose`, when named), or None. No
    consent is given while a withdrawal from access or use is in force: rejoining comes
    first, as a decision of its own."""
    if participant.withdrawal_level in Withdrawal.STOPS_ACCESS:
        return gettext("You have withdrawn from the biobank (“%(level)s”), so no consent can be given. To take "
                       "part again, rejoin first: that is a decision of its own.") % {
            "level": _LEVEL_LABELS[participant.withdrawal_level]}
    if purpose is not None and Consent.objects.filter(participant=participant, purpose=purpose).exclude(
            state=Consent.REVOKED).exists():
        return gettext("Consent for '%(title)s' is already in place.") % {"title": purpose.title}
    return None


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


def consent_change_refusal(*, consent: Consent, action: str) -> str | None:
    """Why `action` cannot be taken on this consent now (its state, or a withdrawal in
    force), or None. consent_change refuses with the same sentences."""
    if action not in _TRANSITIONS:
        return gettext("Unknown action '%(action)s'.") % {"action": action}
    if consent.state not in _TRANSITIONS[action][0]:
        return gettext("A %(state)s consent cannot be %(action)sd.") % {"state": consent.state, "action": action}
    if action == ConsentEvent.RESUME:
        return grant_refusal(participant=consent.participant)
    return None


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
    now = timezone.now()
    if suspend_until is not None and (action != ConsentEvent.SUSPEND or suspend_until <= now):
        raise ConsentStateError(gettext("A suspension end must be in the future, and only a suspension has one."))
    with transaction.atomic():
        # Filtering by participant is what keeps one participant out of another's consents.
        consent = (
            Consent.objects.select_for_update(of=("self",))
            .select_related("purpose", "participant")
            .filter(participant=participant, pk=consent_id)
            .first()
        )
        if consent is None:
            raise Consent.DoesNotExist("No such consent for this participant.")
        refusal = consent_change_refusal(consent=consent, action=action)
        if refusal:
            raise ConsentStateError(refusal)
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
        use = StudyUse.objects.select_for_update(of=("self",)).select_related("study").get(pk=use_id)
        use.status = StudyUse.APPROVED if approve else StudyUse.REJECTED
        use.expires_on = expires_on if approve else None
        use.decided_by = member
        use.decided_at = timezone.now()
        use.save(update_fields=["status", "expires_on", "decided_by", "decided_at"])
        if approve:
            from consent_portal import tasks

            # No request waits on the broker: if it cannot take the task, the beat sweep
            # (consent_requests_sweep) asks the participants, from requests_sent_at.
            from ledger.tasks import enqueue

            transaction.on_commit(lambda: enqueue(tasks.consent_requests_send, use_id=use.pk))
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


# Donation codes and enrolment --------------------------------------------------------------

DONATION_CODE_DAYS = 14
# Crockford's base32: no I, L, O, U, so a code read aloud or copied by hand survives.
_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class EnrolmentError(ValueError):
    """A donation code that does not enrol anyone: unknown, used or expired (one sentence
    for all three, so a custodian learns nothing about codes it was not given)."""


def _code_hash(code: str) -> str:
    normal = "".join(ch for ch in code.upper() if ch.isalnum())
    return hashlib.sha256(normal.encode()).hexdigest()


def donation_code_create(*, participant: Participant) -> str:
    """A new one-time code for the participant to hand to the biobank that collects their
    sample (60 random bits, shown once, stored hashed); any unused code before it stops
    working."""
    code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(12))
    now = timezone.now()
    with transaction.atomic():
        DonationCode.objects.filter(participant=participant, used_at__isnull=True, expires_at__gt=now).update(
            expires_at=now)
        DonationCode.objects.create(
            participant=participant, code_hash=_code_hash(code), created_at=now,
            expires_at=now + timedelta(days=DONATION_CODE_DAYS))
    return "-".join(code[i:i + 4] for i in range(0, 12, 4))


def custodian_enrol(*, custodian: Custodian, code: str) -> tuple[Enrolment, bool]:
    """Redeem a participant's donation code: the custodian is enrolled with the participant
    (a reference of its own for them) and may register their samples. Returns (enrolment,
    created); a participant already enrolled keeps their reference."""
    now = timezone.now()
    with transaction.atomic():
        donation = (
            DonationCode.objects.select_for_update(of=("self",)).select_related("participant")
            .filter(code_hash=_code_hash(code), used_at__isnull=True, expires_at__gt=now,
                    participant__user__isnull=False).first()
        )
        if donation is None:
            raise EnrolmentError("No such donation code, or it was used or has expired.")
        enrolment, created = custodian_enrolment_ensure(custodian=custodian, participant=donation.participant)
        donation.used_at, donation.enrolment = now, enrolment
        donation.save(update_fields=["used_at", "enrolment"])
    return enrolment, created


def custodian_enrolment_ensure(*, custodian: Custodian, participant: Participant) -> tuple[Enrolment, bool]:
    """The custodian's enrolment with the participant, made if there is none (for a redeemed
    code, and for assisted enrolment by the operator, as the demo does). A new enrolment
    is recorded on the ledger, blinded: the entry commits to the participant, the custodian
    and its reference, and tells a reader none of them."""
    with transaction.atomic():
        enrolment, created = Enrolment.objects.get_or_create(
            custodian=custodian, participant=participant,
            defaults={"reference": f"P-{secrets.token_hex(10)}", "created_at": timezone.now()},
        )
        if created:
            pseudonym = str(participant.pseudonym)
            enrolment.ledger_entry = ledger_services.entry_append(
                kind="participant.enrolled_with",
                payload={"type": "participant.enrolled_with", "at": enrolment.created_at.isoformat()},
                committed={"participant": pseudonym, "custodian": custodian.pk, "enrolment": enrolment.reference},
                subject=pseudonym,
            )
            enrolment.save(update_fields=["ledger_entry"])
    return enrolment, created


def sample_register(*, custodian: Custodian, identifier: str, participant: Participant, kind: str) -> Sample:
    """Raises IntegrityError when this custodian already registered the identifier.

    A sample registered while the participant is withdrawn from access or use is withdrawn
    from the start: only a rejoin lets later samples be used. The participant's row lock
    orders this against a withdrawal being made at the same moment."""
    with transaction.atomic():
        participant = Participant.objects.select_for_update().get(pk=participant.pk)
        # A sample belongs to its participant only through enrolment: the API registers for
        # enrolled participants alone; an operator's assisted registration enrols here.
        custodian_enrolment_ensure(custodian=custodian, participant=participant)
        level = participant.withdrawal_level
        now = timezone.now()
        sample = Sample.objects.create(
            custodian=custodian, identifier=identifier, participant=participant, kind=kind,
            withdrawn_at=now if level in Withdrawal.STOPS_ACCESS else None,
        )
        if level in Withdrawal.STOPS_ACCESS:
            # The custodian is told what the withdrawal in force asks of this sample too.
            WithdrawalInstruction.objects.create(
                withdrawal=participant.withdrawals.filter(level=level).first(), sample=sample,
                action=_WITHDRAWAL_ACTIONS[level], created_at=now)
        return sample


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


def _sample_hold_reason(*, sample: str, destroyed_at, withdrawn_at) -> decisions.Reason:
    """Why a sample is denied whatever its participant's consents say: its destruction was
    confirmed, or its participant withdrew from access or use after it was registered (or
    had withdrawn when it was)."""
    if destroyed_at is not None:
        return decisions.Reason(
            "sample_destroyed",
            f"Sample '{sample}' was destroyed (confirmed {destroyed_at.date().isoformat()}); it can never be released.")
    return decisions.Reason(
        "withdrawn",
        f"Sample '{sample}' is withdrawn (since {withdrawn_at.date().isoformat()}): its participant withdrew "
        "from further access or use, and no consent given later covers a sample registered before they "
        "took part again.")


def _use_facts(*, study: Study, use: StudyUse, today) -> decisions.Use:
    return decisions.Use(
        permission=use.permission_id,
        study=selectors.study_facts(study=study),
        today=today,
        disease_lineage=selectors.disease_lineage(disease_id=use.disease_id),
    )


def consent_check(*, custodian: Custodian, sample: str, study: str, purpose: str,
                  idempotency_key: str | None = None) -> CheckOutcome:
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
    elif facts.sample_destroyed_at is not None or facts.sample_withdrawn_at is not None:
        reasons = [_sample_hold_reason(sample=sample, destroyed_at=facts.sample_destroyed_at,
                                       withdrawn_at=facts.sample_withdrawn_at)]
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
        # expiry, status lists), or the custodian gets no permit. The message names every
        # failing check and why; status lists published under another SITE_URL (a
        # configuration problem) add a reason of their own.
        verification = evidence["consent"]["verification"]
        decision = ConsentCheck.DENY
        reasons = [decisions.Reason(
            "credential_not_verified",
            f"The consent credential does not verify: {identity_selectors.verification_failure(verification)}",
        )]
        site_url_mismatch = identity_selectors.verification_site_url_mismatch(verification)
        if site_url_mismatch:
            reasons.append(decisions.Reason("status_list_foreign", site_url_mismatch))
    check = ConsentCheck(
        custodian=custodian,
        sample_identifier=sample,
        study_identifier=study,
        purpose_id=purpose,
        decision=decision,
        reasons=[r.as_dict() for r in reasons],
        evidence=evidence,
        created_at=now,
        idempotency_key=idempotency_key,
    )
    committed = {"check": str(check.id), "custodian": custodian.pk, "sample": sample, "study": study}
    if named is not None:
        committed["credential"] = named.credential_id
    _check_record(check, payload={
        "type": "consent.check",
        "purpose": purpose,
        "decision": decision,
        "reasons": [r.code for r in reasons],
        "at": now.isoformat(),
    }, committed=committed)
    return CheckOutcome(check=check, unknown=unknown)


def _check_record(check: ConsentCheck, *, payload: dict, committed: dict) -> None:
    """Stores the check with its ledger entry (and the entry's openings), all or none. The
    openings are the custodian's, kept under no participant: erasure leaves a custodian's
    own records provable to it.

    On PostgreSQL one statement inserts both (the entry in a data-modifying WITH), so an
    autocommitted check costs one round trip and one WAL flush instead of BEGIN, two
    INSERTs and COMMIT. Elsewhere (SQLite) the same two rows in one transaction.
    """
    if connection.vendor != "postgresql":
        with transaction.atomic():
            check.ledger_entry = ledger_services.entry_append(
                kind="consent.check", payload=payload, committed=committed)
            check.save(force_insert=True)
        check.ledger_openings = check.ledger_entry.opened
        return
    fields = [f for f in ConsentCheck._meta.concrete_fields if f.attname != "ledger_entry_id"]
    qn = connection.ops.quote_name
    entry_column = qn(ConsentCheck._meta.get_field("ledger_entry").column)
    (check.ledger_entry_id,), check.ledger_openings = ledger_services.entry_append_with(
        kind="consent.check", payload=payload, committed=committed, created_at=check.created_at,
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
    participants, holds = selectors.sample_participants(custodian_id=custodian.pk, identifiers=samples)
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
        elif identifier in holds:
            decision, reasons = "deny", [_sample_hold_reason(sample=identifier, **holds[identifier]).as_dict()]
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
    answers = _bulk_permits_verified(answers, evidence)
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
            committed={"check": str(bulk.id), "custodian": custodian.pk, "study": study.identifier},
            payload={
                "type": "consent.bulk_check",
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


def _bulk_permits_verified(answers: list, evidence: dict) -> list:
    """A bulk permit stands only where our signed status lists agree that its credential is
    active (identity_selectors.credentials_status_bulk); otherwise it becomes a deny with
    credential_not_verified, as a single check's would, saying why."""
    permitted = {evidence[named]["credential"] for _, decision, _, named in answers
                 if decision == ConsentCheck.PERMIT and named in evidence}
    if not permitted:
        return answers
    statuses, lists_problem = identity_selectors.credentials_status_bulk(credential_ids=permitted)
    checked = []
    for identifier, decision, reasons, named in answers:
        if decision == ConsentCheck.PERMIT:
            credential = evidence[named]["credential"] if named in evidence else None
            status = statuses.get(credential)
            if status != "active":
                why = lists_problem or (f"the signed status lists say it is {status}" if status
                                        else f"credential {credential} is not on record")
                decision, reasons = ConsentCheck.DENY, [{
                    "code": "credential_not_verified",
                    "message": f"The consent credential does not verify: status: {why}"
                               + ("" if why[-1] in ".?!" else ".")}]
        checked.append((identifier, decision, reasons, named))
    return checked


def canonical_json(value) -> bytes:
    """The bytes a digest is taken over: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _check_evidence(*, sample: str, study: str, purpose: str, consent: selectors.CheckConsent | None) -> dict:
    """What the custodian is shown: enough to prove the decision, no more of the participant.

    The consent's purpose and state, its credential's id and status (the signed status
    lists' bits) and the portal's verification of it, and the receipt of the consent's
    latest ledger event with the opening of that entry's credential commitment alone, so
    `python -m ledger.verify` ties the event to this answer. Not the credential itself: it
    names the participant's DID, an identifier every custodian would share. See
    docs/privacy.md."""
    evidence = {"sample": sample, "study": study, "purpose": purpose, "consent": None}
    if consent is None:
        return evidence
    # The same verification the public verify endpoint runs.
    credential = identity_selectors.credential_evidence(credential_id=consent.credential_id)
    if credential is None:
        credential = {"credential_status": None, "verification": {
            "verified": False, "checks": {"credential": "failed: not found"},
            "errors": [f"credential {consent.credential_id} is not on record"]}}
    receipt = None
    if consent.latest_entry_id is not None:
        receipt = ledger_selectors.entry_receipt(entry_id=consent.latest_entry_id)
        if receipt is not None and consent.latest_credential_opening is not None:
            receipt = ledger_selectors.receipt_with_openings(
                receipt, {"credential": consent.latest_credential_opening})
    evidence["consent"] = {
        "purpose": consent.purpose_slug,
        "state": consent.view.state,
        "credential_id": consent.credential_id,
        "credential_status": credential["credential_status"],
        "verification": credential["verification"],
        "latest_event": {
            "action": consent.latest_action,
            "at": consent.latest_at.isoformat() if consent.latest_at else None,
            "ledger": receipt or {"sealed": False, "detail": "The event is recorded but not sealed yet."},
        },
    }
    return evidence


# Dynamic consent: requests from approved studies -------------------------------------------


def use_purposes_ensure(*, use: StudyUse) -> tuple[Purpose, Purpose]:
    """The two purposes a yes to a request can grant, made if the catalogue lacks them:
    the standing purpose exactly as the use asks (its permission and, for disease-specific
    research, its disease; no broader term ever stands in) and the same limited to this
    study (DUO:0000027, project specific, naming the study). Safe to call again."""
    standing = (
        Purpose.objects.filter(permission_id=use.permission_id, disease_id=use.disease_id, study__isnull=True)
        .annotate(n_modifiers=Count("modifiers")).filter(n_modifiers=0).order_by("position", "pk").first()
    )
    # The loaded ontology names the disease; the study's own label only when it is not loaded.
    disease_label = selectors.disease_label(disease_id=use.disease_id, fallback=use.disease_label)
    if use.disease_id:
        title = f"Research on {disease_label}"
        explanation = (f"Research about {disease_label} and the diseases within it only; "
                       "no other research.")
    else:
        title = plain.PERMISSION_TITLES.get(use.permission_id, use.permission.label)
        explanation = plain.permission_words(use.permission_id) + "."
    if standing is None:
        # A slug of its own; a slug taken meanwhile by a concurrent approval just moves on.
        base = slugify(f"{use.permission.shorthand or use.permission_id} {use.disease_id}")[:40] or "purpose"
        for n in range(1, 100):
            slug = base if n == 1 else f"{base}-{n}"
            if Purpose.objects.filter(slug=slug).exists():
                continue
            try:
                with transaction.atomic():
                    standing = Purpose.objects.create(
                        slug=slug, title=title, explanation=explanation, permission_id=use.permission_id,
                        disease_id=use.disease_id, disease_label=disease_label if use.disease_id else "",
                        position=Purpose.objects.count(),
                    )
                break
            except IntegrityError:
                continue
    study = use.study
    # get_or_create retries the read when a concurrent call created the row first.
    only, _ = Purpose.objects.get_or_create(
        slug=f"study-use-{use.pk}",
        defaults={
            "title": f"{standing.title}, for the study “{study.title}” only",
            "explanation": (f"{standing.explanation} Only the study “{study.title}” ({study.institution}) "
                            "may use your samples and data for it; any other study has to ask you again."),
            "permission_id": use.permission_id, "disease_id": use.disease_id,
            "disease_label": standing.disease_label, "study": study,
            "modifier_params": {decisions.PS: {"project": study.identifier}},
            "position": standing.position,
        },
    )
    if not only.modifiers.exists():
        only.modifiers.set([decisions.PS])
    return standing, only


def consent_requests_create(*, use_id: int) -> int:
    """Ask every participant without a covering consent to consider an approved use.

    Participants who ever gave a consent that covers the use (even if they since revoked
    it) or whose withdrawal is in force are not asked. Each request offers the use exactly
    as asked, for this study only or as a standing purpose (use_purposes_ensure). Returns
    how many were asked; each with an e-mail address on file gets one through Django's mail
    backend.
    """
    use = StudyUse.objects.select_related("study", "permission").get(pk=use_id)
    today = timezone.now().date()
    if use.status != StudyUse.APPROVED or (use.expires_on and use.expires_on < today):
        return 0
    facts = _use_facts(study=use.study, use=use, today=today)
    with transaction.atomic():
        purpose, study_purpose = use_purposes_ensure(use=use)
    candidates = list(
        Participant.objects.filter(user__isnull=False, withdrawal_level="")
        .exclude(requests__use=use)
        .values_list("pk", flat=True)
    )
    views = selectors.consent_views_by_participant(participant_ids=candidates)
    # Rejoining is a fresh start: a consent revoked before it (by the withdrawal) is no answer.
    before_rejoin = selectors.consents_revoked_before_rejoin(participant_ids=candidates)
    asked = [
        pid for pid in candidates
        if not any(not decisions.consent_covers(v, facts) for v in views[pid] if v.consent_id not in before_rejoin)
    ]
    with transaction.atomic():
        ConsentRequest.objects.bulk_create(
            [ConsentRequest(use=use, participant_id=pid, purpose=purpose, study_purpose=study_purpose)
             for pid in asked],
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
    StudyUse.objects.filter(pk=use.pk, requests_sent_at__isnull=True).update(requests_sent_at=timezone.now())
    return len(asked)


def consent_requests_due() -> list[int]:
    """Approved, unexpired uses whose participants were not asked yet (a lost task)."""
    today = timezone.now().date()
    return list(StudyUse.objects.filter(status=StudyUse.APPROVED, requests_sent_at__isnull=True).filter(
        Q(expires_on__isnull=True) | Q(expires_on__gte=today)).values_list("pk", flat=True))


REQUEST_SCOPES = ("study", "standing")
_REQUEST_CLOSED = gettext_lazy("This request is closed: it was answered, or a consent you gave already covers it.")


def consent_request_purpose(*, participant: Participant, request_id: int, scope: str) -> tuple[ConsentRequest, Purpose]:
    """An open request of this participant and the purpose a yes with `scope` grants:
    "study" (this study only) or "standing" (the use exactly as asked, for any approved
    study). Requests made before both were offered get them here."""
    request = _open_request(participant=participant, request_id=request_id)
    return request, _request_purpose(request=request, scope=scope)


def _open_request(*, participant: Participant, request_id: int, lock: bool = False) -> ConsentRequest:
    requests = ConsentRequest.objects.select_related("use__study", "use__permission", "purpose", "study_purpose")
    if lock:
        requests = requests.select_for_update(of=("self",))
    request = requests.filter(pk=request_id, participant=participant).first()
    if request is None:
        raise ConsentRequest.DoesNotExist("No such request for this participant.")
    if request.status != ConsentRequest.OPEN:
        raise ConsentStateError(str(_REQUEST_CLOSED))
    return request


def _request_purpose(*, request: ConsentRequest, scope: str) -> Purpose:
    if scope not in REQUEST_SCOPES:
        raise ConsentStateError(gettext("Choose this study only, or every approved study of this kind."))
    standing, only = request.purpose, request.study_purpose
    if only is None or not _exactly_as_asked(purpose=standing, use=request.use):
        with transaction.atomic():
            standing, only = use_purposes_ensure(use=request.use)
            ConsentRequest.objects.filter(pk=request.pk).update(purpose=standing, study_purpose=only)
        request.purpose, request.study_purpose = standing, only
    return only if scope == "study" else standing


def _exactly_as_asked(*, purpose: Purpose, use: StudyUse) -> bool:
    return (purpose.permission_id == use.permission_id and purpose.disease_id == use.disease_id
            and purpose.study_id is None and not purpose.modifiers.exists())


def consent_request_answer(
    *, participant: Participant, request_id: int, grant: bool, scope: str = "",
    signed_decision: str | None = None,
) -> ConsentRequest:
    """The participant's answer. A yes grants, through consent_grant, the purpose `scope`
    names (consent_request_purpose): never broader than the request shows. It is signed in
    the browser when the participant holds their own key."""
    with transaction.atomic():
        # The participant first, as consent_grant and participant_withdraw lock it: one order.
        participant = Participant.objects.select_for_update().get(pk=participant.pk)
        request = _open_request(participant=participant, request_id=request_id, lock=True)
        if grant:
            purpose = _request_purpose(request=request, scope=scope)
            live = Consent.objects.filter(participant=participant, purpose=purpose).exclude(
                state=Consent.REVOKED
            )
            if not live.exists():
                consent_grant(participant=participant, purpose=purpose, signed_decision=signed_decision)
        request.status = ConsentRequest.GRANTED if grant else ConsentRequest.DECLINED
        request.answered_at = timezone.now()
        request.save(update_fields=["status", "answered_at"])
    return request


def _requests_close_covered(*, participant: Participant, now) -> int:
    """Close this participant's open requests that a consent in force now covers (given on
    the consents page, or in answer to another request): nothing is left to ask."""
    open_requests = list(
        ConsentRequest.objects.filter(participant=participant, status=ConsentRequest.OPEN)
        .select_related("use__study")
    )
    if not open_requests:
        return 0
    views = [v for v in selectors.consent_views(participant=participant) if v.state == Consent.GRANTED]
    today = now.date()
    lineages = selectors.disease_lineages(disease_ids={r.use.disease_id for r in open_requests})
    covered = [
        r.pk for r in open_requests
        if any(not decisions.consent_covers(v, decisions.Use(
            permission=r.use.permission_id, study=selectors.study_facts(study=r.use.study), today=today,
            disease_lineage=lineages[r.use.disease_id])) for v in views)
    ]
    return ConsentRequest.objects.filter(pk__in=covered, status=ConsentRequest.OPEN).update(
        status=ConsentRequest.COVERED, answered_at=now)


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
            consent = Consent.objects.select_for_update(of=("self",)).select_related(
                "purpose", "participant").get(pk=consent_id)
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
# An instruction asks for at least what a weaker one asked: destroying stops access too.
_INSTRUCTION_RANK = {WithdrawalInstruction.STOP_ACCESS: 1, WithdrawalInstruction.DESTROY: 2}
_LEVEL_LABELS = dict(Withdrawal.LEVELS)


def _withdrawal_decision(*, participant: Participant, level: str) -> dict:
    return {"type": "WithdrawalDecision", "participant": participant.did, "level": level}


def withdrawal_refusal(*, participant: Participant, level: str) -> str | None:
    """Why a withdrawal at `level` cannot be made now, or None when it can. A withdrawal
    only goes further (no further contact < access < use) until the participant rejoins."""
    if level not in _WITHDRAWAL_ACTIONS:
        return gettext("Unknown withdrawal level '%(level)s'.") % {"level": level}
    current = participant.withdrawal_level
    if not current:
        return None
    if current == level:
        return gettext("You have already withdrawn at “%(level)s”.") % {"level": _LEVEL_LABELS[current]}
    if Withdrawal.RANK[level] < Withdrawal.RANK[current]:
        return gettext("You have withdrawn at “%(current)s”, which already goes further than “%(level)s”. A "
                       "withdrawal can only go further; to take part again, rejoin.") % {
            "current": _LEVEL_LABELS[current], "level": _LEVEL_LABELS[level]}
    return None


def withdrawal_challenge_create(*, participant: Participant, level: str, domain: str) -> dict:
    """The exact withdrawal the participant's browser is to sign, with a one-time nonce, in
    decision_challenge_create's shape: {"nonce", "domain", "decision"}. Raises
    ConsentStateError, with the sentence to show, for a withdrawal that cannot be made."""
    refusal = withdrawal_refusal(participant=participant, level=level)
    if refusal:
        raise ConsentStateError(refusal)
    return _challenge(participant=participant, domain=domain,
                      expected=_withdrawal_decision(participant=participant, level=level))


def participant_withdraw(*, participant: Participant, level: str, signed_decision: str | None = None) -> Withdrawal:
    """Withdraw at one level, or further than before. No further access or use revokes every
    live consent, marks every sample registered until now as withdrawn (no check permits it
    again, whatever is granted later) and tells each custodian holding them what to do; no
    further use asks them to destroy samples and data. A repeat or a lower level is refused
    with a sentence (ConsentStateError); a stronger instruction closes the weaker one still
    open for the same sample.

    The withdrawal is a signed decision like a consent change: with a self-held key,
    `signed_decision` is the participant's JWT VP over it (withdrawal_challenge_create);
    without one, the portal signs with the custodial key. The withdrawal and every consent
    it revokes carry that signature; their ledger entries carry its SHA-256.
    """
    if level not in _WITHDRAWAL_ACTIONS:
        raise ValueError(f"Unknown withdrawal level '{level}'.")
    with transaction.atomic():
        # Lock the participant, and read its custody, DID and withdrawal as they are now.
        participant = Participant.objects.select_for_update().get(pk=participant.pk)
        now = timezone.now()  # after the lock: later than any change ordered before this one
        refusal = withdrawal_refusal(participant=participant, level=level)
        if refusal:
            raise ConsentStateError(refusal)
        signature = _signature(
            participant=participant, expected=_withdrawal_decision(participant=participant, level=level),
            signed_decision=signed_decision, now=now,
        )
        action = _WITHDRAWAL_ACTIONS[level]
        if action is not None:
            live = Consent.objects.select_for_update(of=("self",)).select_related("purpose", "participant").filter(
                participant=participant
            ).exclude(state=Consent.REVOKED)
            for consent in live:
                _consent_transition(consent=consent, action=ConsentEvent.REVOKE, now=now, signature=signature)
            # Registration locks the participant too, so no sample slips in unmarked.
            Sample.objects.filter(participant=participant, withdrawn_at__isnull=True).update(withdrawn_at=now)
        ConsentRequest.objects.filter(participant=participant, status=ConsentRequest.OPEN).update(
            status=ConsentRequest.DECLINED, answered_at=now
        )
        participant.withdrawal_level = level
        participant.save(update_fields=["withdrawal_level"])
        withdrawal = Withdrawal(
            participant=participant, level=level, created_at=now,
            signed_by=signature.signed_by, decision_jwt=signature.token,
        )
        withdrawal.ledger_entry = ledger_services.entry_append(
            kind="participant.withdrew",
            committed={"withdrawal": str(withdrawal.id), "participant": str(participant.pseudonym),
                       **_decision_digest(signature.token)},
            subject=str(participant.pseudonym),
            payload={
                "type": "participant.withdrew",
                "level": level,
                "at": now.isoformat(),
                "signed_by": signature.signed_by,
            },
        )
        withdrawal.save(force_insert=True)
        if action is not None:
            _withdrawal_instructions_issue(withdrawal=withdrawal, action=action, now=now)
    return withdrawal


def _withdrawal_instructions_issue(*, withdrawal: Withdrawal, action: str, now) -> None:
    """One instruction per sample not destroyed yet that no instruction as strong already
    covers (open or carried out); an open weaker one is closed as superseded by the new one."""
    samples = list(withdrawal.participant.samples.filter(destroyed_at__isnull=True).order_by("registered_at"))
    standing: dict = {}  # sample id -> its instructions not superseded
    for instruction in WithdrawalInstruction.objects.filter(
        sample__in=samples, superseded_by__isnull=True
    ).select_for_update():
        standing.setdefault(instruction.sample_id, []).append(instruction)
    rank = _INSTRUCTION_RANK[action]
    new = WithdrawalInstruction.objects.bulk_create([
        WithdrawalInstruction(withdrawal=withdrawal, sample=sample, action=action, created_at=now)
        for sample in samples
        if not any(_INSTRUCTION_RANK[i.action] >= rank for i in standing.get(sample.pk, []))
    ])
    for instruction in new:  # few: only samples with an open weaker instruction get an update
        weaker = [i.pk for i in standing.get(instruction.sample_id, []) if i.confirmed_at is None]
        if weaker:
            WithdrawalInstruction.objects.filter(pk__in=weaker).update(superseded_by=instruction)


_NOTHING_TO_REJOIN = gettext_lazy("You have not withdrawn: there is nothing to rejoin.")


def _rejoin_decision(*, participant: Participant) -> dict:
    return {"type": "RejoinDecision", "participant": participant.did, "ends": participant.withdrawal_level}


def rejoin_challenge_create(*, participant: Participant, domain: str) -> dict:
    """The exact rejoin decision the participant's browser is to sign, with a one-time nonce."""
    if not participant.withdrawal_level:
        raise ConsentStateError(str(_NOTHING_TO_REJOIN))
    return _challenge(participant=participant, domain=domain, expected=_rejoin_decision(participant=participant))


def participant_rejoin(*, participant: Participant, signed_decision: str | None = None) -> Rejoin:
    """A participant who withdrew takes part again: a deliberate, signed decision of its own,
    recorded on the ledger. It ends the withdrawal in force, so the participant can grant
    consent and be asked by new studies again; samples registered before it stay withdrawn
    (their Sample.withdrawn_at), so new consent covers only samples registered after it."""
    now = timezone.now()
    with transaction.atomic():
        participant = Participant.objects.select_for_update().get(pk=participant.pk)
        if not participant.withdrawal_level:
            raise ConsentStateError(str(_NOTHING_TO_REJOIN))
        signature = _signature(
            participant=participant, expected=_rejoin_decision(participant=participant),
            signed_decision=signed_decision, now=now,
        )
        rejoin = Rejoin(
            participant=participant, ended_level=participant.withdrawal_level, created_at=now,
            signed_by=signature.signed_by, decision_jwt=signature.token,
        )
        rejoin.ledger_entry = ledger_services.entry_append(
            kind="participant.rejoined",
            committed={"rejoin": str(rejoin.id), "participant": str(participant.pseudonym),
                       **_decision_digest(signature.token)},
            subject=str(participant.pseudonym),
            payload={
                "type": "participant.rejoined",
                "ended_level": participant.withdrawal_level,
                "at": now.isoformat(),
                "signed_by": signature.signed_by,
            },
        )
        rejoin.save(force_insert=True)
        participant.withdrawal_level = ""
        participant.save(update_fields=["withdrawal_level"])
    return rejoin


def withdrawal_instruction_confirm(*, custodian: Custodian, seq: int) -> WithdrawalInstruction:
    """A custodian confirms it carried out an instruction; the confirmation is sealed. A
    confirmed destruction denies the sample for ever."""
    now = timezone.now()
    with transaction.atomic():
        instruction = (
            WithdrawalInstruction.objects.select_for_update(of=("self",))
            .select_related("sample", "withdrawal__participant")
            .filter(seq=seq, sample__custodian=custodian)
            .first()
        )
        if instruction is None:
            raise WithdrawalInstruction.DoesNotExist(f"No instruction {seq} for this custodian.")
        if instruction.confirmed_at is not None:
            raise InstructionClosedError(f"Instruction {seq} was already confirmed.", code="already_confirmed")
        if instruction.superseded_by_id is not None:
            raise InstructionClosedError(
                f"Instruction {seq} was superseded by instruction {instruction.superseded_by_id} "
                "(the participant withdrew further): carry out and confirm that one.", code="superseded")
        instruction.confirmed_at = now
        instruction.confirmation_entry = ledger_services.entry_append(
            kind="withdrawal.confirmed",
            committed={
                "instruction": instruction.seq,
                "withdrawal": str(instruction.withdrawal_id),
                "participant": str(instruction.withdrawal.participant.pseudonym),
                "sample": instruction.sample.identifier,
                "custodian": custodian.pk,
            },
            subject=str(instruction.withdrawal.participant.pseudonym),
            payload={
                "type": "withdrawal.confirmed",
                "action": instruction.action,
                "at": now.isoformat(),
            },
        )
        instruction.save(update_fields=["confirmed_at", "confirmation_entry"])
        if Erasure.objects.filter(participant_id=instruction.withdrawal.participant_id).exists():
            # Erased before the custodian confirmed: the entry must not be openable either.
            ledger_services.openings_erase(subject=str(instruction.withdrawal.participant.pseudonym))
        if instruction.action == WithdrawalInstruction.DESTROY:
            Sample.objects.filter(pk=instruction.sample_id, destroyed_at__isnull=True).update(destroyed_at=now)
    return instruction


def _evidence_openings_erase(*, participant: Participant) -> None:
    credentials = list(participant.consents.values_list("credential_id", flat=True))
    for check in ConsentCheck.objects.filter(evidence__consent__credential_id__in=credentials).only("evidence"):
        receipt = ((check.evidence.get("consent") or {}).get("latest_event") or {}).get("ledger") or {}
        if receipt.pop("openings", None) is not None:
            check.save(update_fields=["evidence"])


def participant_erase(*, participant: Participant, signed_decision: str | None = None) -> Erasure:
    """Right to erasure: withdraw from all use, then delete the person (login, name, e-mail)
    so the pseudonym no longer points to anyone, and delete the openings of the ledger
    entries about them, so no one can link those entries to the pseudonym any more. The
    ledger itself is untouched and stays verifiable.

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
        # The ledger keeps every entry, verifiable; without their openings no one can show
        # any more which of them were this participant's: the kept ones, and the copies
        # custodians' stored check evidence holds of their consent events' openings.
        ledger_services.openings_erase(subject=str(participant.pseudonym))
        _evidence_openings_erase(participant=participant)
        erasure = Erasure.objects.create(participant=participant, erased_at=timezone.now())
    return erasure
