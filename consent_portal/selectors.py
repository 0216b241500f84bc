"""Every read in the consent domain that is more than a one-line lookup."""

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Prefetch, Q
from django.utils.translation import gettext_lazy as _

from consent_portal import decisions, plain
from consent_portal.models import (
    Consent,
    ConsentCheck,
    ConsentEvent,
    ConsentRequest,
    Custodian,
    Disease,
    DuoTerm,
    Enrolment,
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
from identity.db import prepared_rows
from ledger.models import EntryOpenings
from ledger import selectors as ledger_selectors


# DUO permission ids, read at most once a minute: the terms are reference data that the
# migrations load from the shipped CSV (and ontology releases add, never remove).
# (expires at, ids); one tuple, swapped whole, so threads never see it half-made.
_duo_permissions: tuple[float, frozenset[str]] = (0.0, frozenset())


def duo_permission_ids() -> frozenset[str]:
    global _duo_permissions
    expires, ids = _duo_permissions
    if time.monotonic() >= expires:
        ids = frozenset(DuoTerm.objects.filter(kind=DuoTerm.PERMISSION).values_list("pk", flat=True))
        _duo_permissions = (time.monotonic() + 60, ids)
    return ids


def custodian_for_token(*, token: str) -> Custodian | None:
    from consent_portal import demo

    if not settings.DEMO_ALLOWED and token == demo.DEMO_CUSTODIAN_TOKEN:
        return None  # published in the README: never a way in once DEBUG is off
    digest = hashlib.sha256(token.encode()).hexdigest()
    return Custodian.objects.filter(token_hash=digest, active=True).first()


def enrolment_for_custodian(*, custodian: Custodian, reference: str):
    """This custodian's enrolment of the participant it calls `reference` (its own reference,
    or, for integrations written before enrolment, the participant's code), or None: the
    same None for no such participant and for one not enrolled with this custodian."""
    match = Q(reference=reference)
    try:
        match |= Q(participant__pseudonym=uuid.UUID(reference))
    except ValueError:
        pass
    return (Enrolment.objects.select_related("participant")
            .filter(match, custodian=custodian, participant__user__isnull=False).first())


def purpose_claims(*, purpose: Purpose) -> dict:
    """What a consent credential says about its purpose (no personal data)."""
    claims = {
        "purpose": purpose.permission_id,
        "purposeLabel": purpose.title,
        "dataUseModifiers": sorted(m.id for m in purpose.modifiers.all()),
    }
    if purpose.disease_id:
        claims["disease"] = purpose.disease_id
        if purpose.disease_label:
            claims["diseaseLabel"] = purpose.disease_label
    if purpose.study_id is not None:
        # A consent for one study only (DUO:0000027) names the study it permits.
        claims["study"] = purpose.study.identifier
        claims["studyTitle"] = purpose.study.title
    return claims


def purposes_with_consents(*, participant: Participant) -> list[tuple[Purpose, Consent | None]]:
    """Every purpose of the catalogue, and every study-only purpose this participant holds a
    live consent for, paired with that consent (if any)."""
    live = {
        c.purpose_id: c
        for c in Consent.objects.filter(participant=participant).exclude(state=Consent.REVOKED)
    }
    purposes = Purpose.objects.filter(Q(study__isnull=True) | Q(pk__in=live)).select_related(
        "permission", "study").prefetch_related("modifiers")
    return [(p, live.get(p.pk)) for p in purposes]


def purpose_for_participant(*, participant: Participant, slug: str) -> Purpose | None:
    """A purpose this participant may be offered by slug: the catalogue's, or a study-only
    one they were asked for or hold."""
    return (
        Purpose.objects.select_related("permission", "study").prefetch_related("modifiers")
        .filter(slug=slug).filter(
            Q(study__isnull=True) | Q(consents__participant=participant)
            | Q(pk__in=ConsentRequest.objects.filter(participant=participant).values("study_purpose"))
        ).distinct().first()
    )


def event_receipt(*, participant: Participant, event_id: int) -> dict | None:
    """The ledger receipt of one of this participant's consent events, with the openings
    that prove the blinded entry is theirs (their pseudonym and the credential); None for
    an event that is not theirs (or no such event); {"sealed": False} while pending, and
    without openings once erased."""
    event = ConsentEvent.objects.filter(pk=event_id, consent__participant=participant).first()
    if event is None:
        return None
    receipt = ledger_selectors.entry_receipt(entry_id=event.ledger_entry_id)
    if receipt is None:
        return {"sealed": False, "detail": "This decision is recorded and will be sealed shortly."}
    openings = ledger_selectors.entry_openings(
        entry_ids=[event.ledger_entry_id], fields=["participant", "credential", "decision_sha256"]).get(
            event.ledger_entry_id)
    return ledger_selectors.receipt_with_openings(receipt, openings)


def consent_history(*, participant: Participant):
    """This participant's consent events, newest first, with ledger indexes once sealed."""
    return (
        ConsentEvent.objects.filter(consent__participant=participant)
        .select_related("consent__purpose", "ledger_entry")
        .order_by("-created_at", "-ledger_entry_id")
    )


def credential_cards(*, participant: Participant, credential_ids: list[str]) -> list[dict]:
    """Each of the participant's credentials with its live status as a verifier reads it:
    {"doc", "status": active | suspended | revoked | unverified | unknown, "problem" (why
    an unrevoked credential does not verify), "consent"}. identity's credential_evidence
    gives the document, its two status bits and its verification in one query a credential;
    the consents (purpose titles, scheduled ends) come in one query for all."""
    consents = {c.credential_id: c for c in Consent.objects.filter(participant=participant).select_related("purpose")}
    cards = []
    for credential_id in credential_ids:
        evidence = identity_selectors.credential_evidence(credential_id=credential_id)
        if evidence is None:  # not in identity's store: say so rather than leave it out
            cards.append({"doc": {"id": credential_id}, "status": "unknown", "problem": None,
                          "consent": consents.get(credential_id)})
            continue
        bits = evidence["credential_status"]
        status = "revoked" if bits["revoked"] else "suspended" if bits["suspended"] else "active"
        problem = None
        if status == "active" and not evidence["verification"]["verified"]:
            # Not revoked, yet a verifier refuses it (say, status lists under another SITE_URL).
            status, problem = "unverified", identity_selectors.verification_failure(evidence["verification"])
        cards.append({"doc": evidence["credential"], "status": status, "problem": problem,
                      "consent": consents.get(credential_id)})
    return cards


def participant_credential_ids(*, participant: Participant) -> list[str]:
    ids = [participant.enrolment_credential_id]
    ids += list(
        Consent.objects.filter(participant=participant).order_by("granted_at").values_list("credential_id", flat=True)
    )
    return ids


@dataclass(frozen=True)
class ConsentShapes:
    """Every consent of some participants, in the compact form bulk checks decide on.

    by_participant maps a participant to (consent ids, shape), both in consent-id order;
    the shape is one (purpose id, state, grant day) per consent, and participants with
    equal shapes get the same answer, so a bulk check builds the rule's views
    (views(ids, shape)) once per distinct shape, not once per consent."""

    by_participant: dict[int, tuple[tuple[int, ...], tuple[tuple, ...]]]
    purposes: dict[int, dict]

    def views(self, ids, shape) -> list[decisions.ConsentView]:
        return [
            decisions.ConsentView(consent_id=consent_id, state=state, granted_on=granted_on,
                                  **self.purposes[purpose_id])
            for consent_id, (purpose_id, state, granted_on) in zip(ids, shape, strict=True)
        ]


def consent_shapes_by_participant(*, participant_ids) -> ConsentShapes:
    """Every consent of these participants (see ConsentShapes), in two queries whatever
    the number of participants (bulk checks rely on this)."""
    # What each purpose contributes, worked out once rather than once per consent.
    purposes = {
        p.pk: {
            "permission": p.permission_id,
            "disease_id": p.disease_id,
            "modifiers": frozenset(m.id for m in p.modifiers.all()),
            "params": p.modifier_params,
        }
        for p in Purpose.objects.prefetch_related("modifiers")
    }
    # Only the time limit (TS) reads the grant date; converting 50,000 timestamps costs
    # more than the query, so fetch them only when some purpose has one.
    dated = any(decisions.TS in p["modifiers"] for p in purposes.values())
    if connection.vendor == "postgresql":
        # Tens of thousands of rows: fetched at once, without the ORM's per-row work.
        rows = prepared_rows(
            f"SELECT id, participant_id, purpose_id, state, {'granted_at' if dated else 'NULL'}"
            f" FROM {Consent._meta.db_table} WHERE participant_id = ANY(%b::bigint[]) ORDER BY id",
            [list(participant_ids)])
    else:
        rows = Consent.objects.filter(participant__id__any=participant_ids).order_by("pk").values_list(
            "pk", "participant_id", "purpose_id", "state", "granted_at" if dated else "pk")
    ids: dict[int, list[int]] = {pid: [] for pid in participant_ids}
    shapes: dict[int, list[tuple]] = {pid: [] for pid in participant_ids}
    for pk, participant_id, purpose_id, state, granted_at in rows:
        ids[participant_id].append(pk)
        shapes[participant_id].append((purpose_id, state, granted_at.date() if dated else None))
    return ConsentShapes(
        by_participant={pid: (tuple(ids[pid]), tuple(shapes[pid])) for pid in ids}, purposes=purposes)


def consent_views_by_participant(*, participant_ids) -> dict[int, list[decisions.ConsentView]]:
    """Every consent of these participants, as the rule reads them, in two queries."""
    shapes = consent_shapes_by_participant(participant_ids=participant_ids)
    return {pid: shapes.views(*facts) for pid, facts in shapes.by_participant.items()}


def consent_views(*, participant: Participant) -> list[decisions.ConsentView]:
    return consent_views_by_participant(participant_ids=[participant.pk])[participant.pk]


def consents_revoked_before_rejoin(*, participant_ids) -> set[int]:
    """The revoked consents of these participants granted before their latest rejoin."""
    latest = dict(
        Rejoin.objects.filter(participant_id__in=participant_ids).values("participant_id")
        .annotate(at=Max("created_at")).values_list("participant_id", "at")
    )
    if not latest:
        return set()
    rows = Consent.objects.filter(participant_id__in=latest, state=Consent.REVOKED).values_list(
        "pk", "participant_id", "granted_at")
    return {pk for pk, participant_id, granted_at in rows if granted_at < latest[participant_id]}


def disease_label(*, disease_id: str, fallback: str = "") -> str:
    """A disease's name from the loaded hierarchy; else `fallback` (a label someone gave with
    the id), else the id itself."""
    if not disease_id:
        return ""
    return Disease.objects.filter(pk=disease_id).values_list("label", flat=True).first() or fallback or disease_id


def disease_lineage(*, disease_id: str) -> tuple[str, ...]:
    """The disease and its ancestors, nearest first; just the id when no hierarchy is loaded."""
    return disease_lineages(disease_ids={disease_id})[disease_id]


def disease_lineages(*, disease_ids) -> dict[str, tuple[str, ...]]:
    """disease_lineage for each of several diseases, reading the hierarchy once."""
    parents = dict(Disease.objects.values_list("id", "parent_id")) if any(disease_ids) else {}
    lineages = {}
    for disease_id in disease_ids:
        lineage = [disease_id] if disease_id else []
        while lineage and parents.get(lineage[-1]) and parents[lineage[-1]] not in lineage:
            lineage.append(parents[lineage[-1]])
        lineages[disease_id] = tuple(lineage)
    return lineages


def study_facts(*, study: Study) -> decisions.Study:
    return decisions.Study(
        identifier=study.identifier,
        institution=study.institution,
        commercial=study.commercial,
        for_profit=study.for_profit,
        countries=frozenset(study.countries),
        collaborators=frozenset(study.collaborators),
        investigators=frozenset(study.investigators),
        irb_reference=study.irb_reference,
        will_publish=study.will_publish,
        returns_derived_data=study.returns_derived_data,
        methods_development=study.methods_development,
    )


def consent_counts() -> dict[str, dict[str, int]]:
    """{purpose slug: {state: count}} for the ethics dashboard."""
    counts: dict[str, dict[str, int]] = {
        p.slug: {state: 0 for state, _ in Consent.STATES} for p in Purpose.objects.all()
    }
    rows = Consent.objects.values("purpose__slug", "state").annotate(n=Count("id"))
    for row in rows:
        counts[row["purpose__slug"]][row["state"]] = row["n"]
    return counts


def studies_for_review():
    return Study.objects.prefetch_related(
        Prefetch("uses", queryset=StudyUse.objects.select_related("permission", "decided_by"))
    )


def latest_checks(*, limit: int = 20):
    return ConsentCheck.objects.select_related("custodian", "ledger_entry")[:limit]


def sample_participants(*, custodian_id: int, identifiers: list[str]) -> tuple[dict[str, int], dict[str, dict]]:
    """({sample identifier: participant id}, {sample identifier: {"withdrawn_at",
    "destroyed_at"}}) for those of the identifiers this custodian registered, the second for
    the samples a withdrawal or a confirmed destruction holds back; in one query (prepared on
    PostgreSQL; %b sends an array of 10,000 values in binary, sparing psycopg a
    regular-expression test of each as text)."""
    if connection.vendor == "postgresql":
        rows = prepared_rows(
            f"SELECT identifier, participant_id, withdrawn_at, destroyed_at FROM {Sample._meta.db_table}"
            f" WHERE custodian_id = %s AND identifier = ANY(%b::text[])",
            [custodian_id, list(identifiers)])
    else:
        rows = Sample.objects.filter(custodian_id=custodian_id, identifier__any=identifiers).values_list(
            "identifier", "participant_id", "withdrawn_at", "destroyed_at")
    participants, holds = {}, {}
    for identifier, participant_id, withdrawn_at, destroyed_at in rows:
        participants[identifier] = participant_id
        if withdrawn_at is not None or destroyed_at is not None:
            holds[identifier] = {"withdrawn_at": withdrawn_at, "destroyed_at": destroyed_at}
    return participants, holds


def consent_evidence_bulk(*, consent_ids) -> dict[int, dict]:
    """Per consent: its credential, state and the ledger position of its latest event, in
    one query (every consent has at least its grant event). Inclusion proofs are fetched
    per index from the ledger API when needed."""
    slugs = dict(Purpose.objects.values_list("pk", "slug"))
    if connection.vendor == "postgresql":
        # One index probe per consent for its latest event (the same rule as check_facts).
        rows = prepared_rows(_evidence_bulk_sql(), [list(consent_ids)])
    else:
        rows = ConsentEvent.objects.filter(consent__id__any=consent_ids).order_by(
            "consent_id", "-created_at", "-ledger_entry_id").values_list(
            "consent_id", "consent__credential_id", "consent__state", "consent__purpose_id", "action",
            "ledger_entry__index")
    # The ledger index names the event; its time is in the sealed leaf.
    evidence = {}
    for consent_id, credential_id, state, purpose_id, action, index in rows:
        if consent_id not in evidence:  # the first row of a consent is its latest event
            evidence[consent_id] = {
                "credential": credential_id, "consent_state": state, "purpose": slugs[purpose_id],
                "latest_event": {"action": action, "ledger_index": index},
            }
    return evidence


def request_counts(*, use_ids) -> dict[int, dict[str, int]]:
    """How many were asked and how many answered, per study use; never who."""
    counts = {pk: {"asked": 0, "granted": 0, "declined": 0, "covered": 0, "open": 0} for pk in use_ids}
    rows = ConsentRequest.objects.filter(use_id__in=use_ids).values("use_id", "status").annotate(n=Count("id"))
    for row in rows:
        counts[row["use_id"]][row["status"]] = row["n"]
        counts[row["use_id"]]["asked"] += row["n"]
    return counts


def open_requests(*, participant: Participant) -> list[ConsentRequest]:
    """This participant's open requests, newest first, each with `asks`: what its use asks
    for in plain words (the permission, the disease by name)."""
    requests = list(
        ConsentRequest.objects.filter(participant=participant, status=ConsentRequest.OPEN)
        .select_related("use__study", "use__permission", "purpose")
        .order_by("-created_at")
    )
    for r in requests:
        r.asks = {
            "permission": plain.permission_words(r.use.permission_id),
            "disease": disease_label(disease_id=r.use.disease_id, fallback=r.use.disease_label),
        }
    return requests


def withdrawal_feed(*, custodian: Custodian, since: int, limit: int):
    """Instructions for this custodian's samples after cursor `since`, oldest first."""
    return (
        WithdrawalInstruction.objects.filter(sample__custodian=custodian, seq__gt=since)
        .select_related("sample", "withdrawal__ledger_entry", "confirmation_entry")
        .order_by("seq")[:limit]
    )


def withdrawals_of(*, participant: Participant):
    return participant.withdrawals.prefetch_related(
        Prefetch(
            "instructions",
            queryset=WithdrawalInstruction.objects.select_related("sample__custodian", "confirmation_entry"),
        )
    ).select_related("ledger_entry")


def consent_of_custodians_participant(*, credential_id: str, custodian: Custodian) -> Consent | None:
    """A consent, if this custodian holds a sample of its participant (else None)."""
    return (
        Consent.objects.select_related("purpose__permission", "participant")
        .filter(credential_id=credential_id, participant__samples__custodian=custodian)
        .distinct()
        .first()
    )


# Consent states as R4 ConsentState (http://hl7.org/fhir/consent-state-codes, 4.0.1) defines
# them: active "is to be followed and enforced"; inactive "is terminated or replaced";
# rejected "has been rejected by one or more of the parties", a refusal, which a revocation
# (given, then withdrawn) is not.
# A suspension has no code of its own in R4. It is exported as inactive, not as active with
# a deny: Consent.status is a modifier element, and a consumer that reads only the status
# must not take a consent the participant paused for one "to be followed"; inactive is the
# fail-closed choice, as the suspended credential is for a verifier. What tells a suspension
# (temporary) from a revocation (terminated) is the provision: a revoked consent's period
# ends at the revocation; a suspended consent's period stays open and carries a nested deny
# provision from the suspension to its scheduled end, if one is set.
_FHIR_STATUS = {Consent.GRANTED: "active", Consent.SUSPENDED: "inactive", Consent.REVOKED: "inactive"}
DUO_SYSTEM = "http://purl.obolibrary.org/obo/duo.owl"


def _latest_event_at(*, consent: Consent, action: str) -> datetime:
    """When the consent's latest `action` event happened (one query); the consent's
    updated_at, which the same transition wrote, if it has no such event."""
    at = (
        ConsentEvent.objects.filter(consent=consent, action=action)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    return at or consent.updated_at


def consent_fhir(*, consent: Consent, credential: dict | None, patient: dict | None = None) -> dict:
    """The consent as a FHIR R4 (4.0.1) Consent resource.

    The patient is named only by pseudonym, or by `patient` (a FHIR Identifier: a
    custodian's own reference for the participant, so a custodian learns no identifier other
    custodians share); the purpose and modifiers are DUO codes; the verifiable credential,
    when given (the participant's own export: it names their DID), rides along as the
    source attachment. A revoked consent is
    inactive and its provision's period ends at the revocation; a suspended one is inactive
    with its period open and a nested deny provision for the suspension (see _FHIR_STATUS)."""
    purpose = consent.purpose
    codes = [{"system": DUO_SYSTEM, "code": purpose.permission_id, "display": purpose.permission.label}]
    codes += [{"system": DUO_SYSTEM, "code": m.id, "display": m.label} for m in purpose.modifiers.all()]
    provision = {
        "type": "permit",
        "period": {"start": consent.granted_at.isoformat()},
        "purpose": [codes[0]],
        "code": [{"coding": [c]} for c in codes[1:]],
    }
    if purpose.disease_id:
        provision["code"].append({"coding": [{"system": "http://purl.obolibrary.org/obo/mondo.owl",
                                               "code": purpose.disease_id, "display": purpose.disease_label}]})
    if not provision["code"]:
        del provision["code"]
    if consent.state == Consent.REVOKED:
        provision["period"]["end"] = _latest_event_at(consent=consent, action=ConsentEvent.REVOKE).isoformat()
    elif consent.state == Consent.SUSPENDED:
        paused = {"start": _latest_event_at(consent=consent, action=ConsentEvent.SUSPEND).isoformat()}
        if consent.suspended_until is not None:
            paused["end"] = consent.suspended_until.isoformat()
        provision["provision"] = [{"type": "deny", "period": paused}]
    return {
        "resourceType": "Consent",
        "id": consent.credential_id.removeprefix("urn:uuid:"),
        "status": _FHIR_STATUS[consent.state],
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentcategorycodes",
                                  "code": "research"}]}],
        "patient": {"identifier": patient or {
            "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{consent.participant.pseudonym}"}},
        "dateTime": consent.updated_at.isoformat(),
        "policyRule": {"coding": [codes[0]]},
        **({"sourceAttachment": {
            "contentType": "application/ld+json",
            "title": "Consent verifiable credential (W3C VC Data Model 1.1)",
            "data": base64.b64encode(json.dumps(credential, sort_keys=True).encode()).decode(),
        }} if credential is not None else {}),
        "provision": provision,
    }


def custodian_patient_identifier(*, custodian: Custodian, participant: Participant) -> dict:
    """The FHIR Identifier by which a custodian knows a participant: its enrolment reference
    (POST /api/v1/enrolments gave it), in a system of that custodian's own."""
    reference = Enrolment.objects.filter(custodian=custodian, participant=participant).values_list(
        "reference", flat=True).first()
    return {"system": f"{settings.SITE_URL.rstrip('/')}/custodians/{custodian.pk}/participants",
            "value": reference or ""}


WITHDRAWAL_MEANING = {
    Withdrawal.NO_CONTACT: _("The biobank no longer contacts you, and new studies do not ask you. "
                             "Your consents stay as they are."),
    Withdrawal.NO_ACCESS: _("Every consent you gave is revoked and custodians no longer give out the samples "
                            "and data you gave before; data already shared with studies stays with them."),
    Withdrawal.NO_USE: _("Every consent you gave is revoked and custodians destroy the samples and data you "
                         "gave before; each confirmation is shown on the Withdraw page."),
}


def participant_status(*, user) -> dict | None:
    """For a participant's pages: the withdrawal in force (its level, when, what it means)
    and how many requests are open; None for other users. One query, and one more while a
    withdrawal is in force."""
    row = (
        Participant.objects.filter(user=user)
        .annotate(open_requests=Count("requests", filter=Q(requests__status=ConsentRequest.OPEN)))
        .values("pk", "withdrawal_level", "open_requests").first()
    )
    if row is None:
        return None
    level = row["withdrawal_level"]
    withdrawal = None
    if level:
        since = (Withdrawal.objects.filter(participant_id=row["pk"], level=level)
                 .values_list("created_at", flat=True).first())
        withdrawal = {"level": level, "label": dict(Withdrawal.LEVELS)[level], "since": since,
                      "meaning": WITHDRAWAL_MEANING[level], "stops_access": level in Withdrawal.STOPS_ACCESS}
    return {"withdrawal": withdrawal, "open_requests": row["open_requests"]}


def withdrawal_preview(*, participant: Participant, level: str) -> dict:
    """What a withdrawal at `level` would do now, for the page that asks to confirm it: the
    consents it revokes, and how many samples at how many custodians it reaches."""
    if level not in Withdrawal.STOPS_ACCESS:
        return {"consents": [], "samples": 0, "custodians": 0}
    consents = list(
        Consent.objects.filter(participant=participant).exclude(state=Consent.REVOKED)
        .select_related("purpose").order_by("purpose__position", "purpose__slug")
    )
    samples = participant.samples.filter(destroyed_at__isnull=True)
    return {
        "consents": consents,
        "samples": samples.count(),
        "custodians": samples.values("custodian").distinct().count(),
    }


def withdrawn_from_use(*, participant: Participant) -> bool:
    """Whether the withdrawal in force is the strongest level (no further use)."""
    return Participant.objects.filter(pk=participant.pk, withdrawal_level=Withdrawal.NO_USE).exists()


def signing_dids(*, participant: Participant) -> list[str]:
    """The DIDs whose browser keys may sign this participant's decisions (none while custodial)."""
    if participant.key_custody != Participant.SELF_CUSTODY:
        return []
    return [
        key.did for key in identity_selectors.holder_keys(holder=str(participant.pseudonym))
        if key.custody == Participant.SELF_CUSTODY
    ]


# -- one custodian check, in one query ------------------------------------------------------


@dataclass(frozen=True)
class CheckConsent:
    """One of the sample's participant's consents, with what its evidence needs."""

    view: decisions.ConsentView
    purpose_slug: str
    credential_id: str
    latest_action: str | None
    latest_at: datetime | None
    latest_entry_id: int | None
    # The opening of the latest event's credential commitment (ledger.blinding), which the
    # custodian's evidence carries; None for an event sealed before entries were blinded.
    latest_credential_opening: dict | None = None


@dataclass(frozen=True)
class CheckFacts:
    sample_id: str | None  # None: no such sample at this custodian
    study: decisions.Study | None  # None: no such study
    use_id: int | None  # the study's approved use for the purpose, if any
    use_disease_id: str
    use_expires_on: date | None
    consents: tuple[CheckConsent, ...]
    # Sample.withdrawn_at / destroyed_at: set, the sample is denied whatever the consents say.
    sample_withdrawn_at: datetime | None = None
    sample_destroyed_at: datetime | None = None


def _json_column(value):
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _aware(value) -> datetime | None:
    """A timestamp column from a raw cursor: aware on PostgreSQL; on SQLite naive UTC (or
    text, where a join hides the column's declared type)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def _check_facts_sql() -> str:
    t = {m: m._meta.db_table for m in (Sample, Study, StudyUse, Consent, Purpose, ConsentEvent)}
    modifiers = Purpose.modifiers.through._meta.db_table
    aggregate = "string_agg" if connection.vendor == "postgresql" else "group_concat"
    return f"""
SELECT s.id, s.participant_id,
       st.id, st.identifier, st.institution, st.commercial, st.for_profit, st.countries,
       st.collaborators, st.investigators, st.irb_reference, st.will_publish,
       st.returns_derived_data, st.methods_development,
       u.id, u.disease_id, u.expires_on,
       c.id, c.state, c.granted_at, c.credential_id,
       p.permission_id, p.disease_id, p.modifier_params, p.slug,
       (SELECT {aggregate}(m.duoterm_id, ',') FROM {modifiers} m WHERE m.purpose_id = p.id),
       ev.action, ev.created_at, ev.ledger_entry_id,
       s.withdrawn_at, s.destroyed_at,
       (SELECT o.openings FROM {EntryOpenings._meta.db_table} o WHERE o.entry_id = ev.ledger_entry_id)
FROM (SELECT 1 AS one) one
LEFT JOIN {t[Sample]} s ON s.custodian_id = %s AND s.identifier = %s
LEFT JOIN {t[Study]} st ON st.identifier = %s
LEFT JOIN {t[StudyUse]} u ON u.id = (
    SELECT u2.id FROM {t[StudyUse]} u2
    WHERE u2.study_id = st.id AND u2.permission_id = %s AND u2.status = %s ORDER BY u2.id LIMIT 1)
LEFT JOIN {t[Consent]} c ON c.participant_id = s.participant_id
LEFT JOIN {t[Purpose]} p ON p.id = c.purpose_id
LEFT JOIN {t[ConsentEvent]} ev ON ev.id = {_latest_event_sql("c")}
ORDER BY c.id"""


def _latest_event_sql(consent: str) -> str:
    """The id of the latest event of the consent aliased `consent` (a correlated subquery;
    ties on the time go to the later ledger entry)."""
    events = ConsentEvent._meta.db_table
    return (f"(SELECT e2.id FROM {events} e2 WHERE e2.consent_id = {consent}.id"
            f" ORDER BY e2.created_at DESC, e2.ledger_entry_id DESC LIMIT 1)")


def _evidence_bulk_sql() -> str:
    consents, events = Consent._meta.db_table, ConsentEvent._meta.db_table
    entries = ConsentEvent._meta.get_field("ledger_entry").related_model._meta.db_table
    # LATERAL ... LIMIT 1 keeps it a probe per consent (check_facts' rule for the latest
    # event); joined on the subquery's id instead, PostgreSQL hashes the whole event table.
    return (f"SELECT c.id, c.credential_id, c.state, c.purpose_id, ev.action, le.index"
            f" FROM {consents} c CROSS JOIN LATERAL ("
            f"   SELECT e2.action, e2.ledger_entry_id FROM {events} e2 WHERE e2.consent_id = c.id"
            f"   ORDER BY e2.created_at DESC, e2.ledger_entry_id DESC LIMIT 1) ev"
            f" LEFT JOIN {entries} le ON le.id = ev.ledger_entry_id"
            f" WHERE c.id = ANY(%b::bigint[])")


def check_facts(*, custodian_id: int, sample: str, study: str, purpose: str) -> CheckFacts:
    """Everything a single consent check decides on, in one query: the sample (of this
    custodian only), the study and its approved use for the purpose, and every consent of
    the sample's participant with its purpose's rule and its latest event.

    The bulk path (consent_shapes_by_participant) reads the same facts for many samples.
    """
    rows = prepared_rows(_check_facts_sql(), [custodian_id, sample, study, purpose, StudyUse.APPROVED])
    first = rows[0]
    study_facts = None
    if first[2] is not None:
        study_facts = decisions.Study(
            identifier=first[3], institution=first[4], commercial=bool(first[5]),
            for_profit=bool(first[6]), countries=frozenset(_json_column(first[7])),
            collaborators=frozenset(_json_column(first[8])),
            investigators=frozenset(_json_column(first[9])), irb_reference=first[10],
            will_publish=bool(first[11]), returns_derived_data=bool(first[12]),
            methods_development=bool(first[13]),
        )
    expires_on = first[16]
    if isinstance(expires_on, str):  # SQLite
        expires_on = date.fromisoformat(expires_on)
    consents = []
    for row in rows:
        if row[17] is None:
            continue
        granted_at, latest_at = _aware(row[19]), _aware(row[27])
        view = decisions.ConsentView(
            consent_id=row[17], state=row[18], permission=row[21], disease_id=row[22] or "",
            modifiers=frozenset(row[25].split(",")) if row[25] else frozenset(),
            params=_json_column(row[23]) or {}, granted_on=granted_at.date() if granted_at else None,
        )
        openings = _json_column(row[31]) or {}
        consents.append(CheckConsent(view=view, purpose_slug=row[24], credential_id=row[20],
                                     latest_action=row[26], latest_at=latest_at, latest_entry_id=row[28],
                                     latest_credential_opening=openings.get("credential")))
    return CheckFacts(
        sample_id=str(uuid.UUID(str(first[0]))) if first[0] is not None else None,
        study=study_facts, use_id=first[14], use_disease_id=first[15] or "",
        use_expires_on=expires_on, consents=tuple(consents),
        sample_withdrawn_at=_aware(first[29]), sample_destroyed_at=_aware(first[30]),
    )
