"""Every read in the consent domain that is more than a one-line lookup."""

import base64
import hashlib
import json

from django.db import connection
from django.db.models import Count, Prefetch

from consent_portal import decisions
from consent_portal.models import (
    Consent,
    ConsentCheck,
    ConsentEvent,
    ConsentRequest,
    Custodian,
    Disease,
    Participant,
    Purpose,
    Study,
    StudyUse,
    WithdrawalInstruction,
)
from identity import selectors as identity_selectors


def custodian_for_token(*, token: str) -> Custodian | None:
    digest = hashlib.sha256(token.encode()).hexdigest()
    return Custodian.objects.filter(token_hash=digest, active=True).first()


def purpose_claims(*, purpose: Purpose) -> dict:
    """What a consent credential says about its purpose (no personal data)."""
    claims = {
        "purpose": purpose.permission_id,
        "purposeLabel": purpose.title,
        "dataUseModifiers": sorted(m.id for m in purpose.modifiers.all()),
    }
    if purpose.disease_id:
        claims["disease"] = purpose.disease_id
    return claims


def purposes_with_consents(*, participant: Participant) -> list[tuple[Purpose, Consent | None]]:
    """Every purpose, paired with this participant's live consent for it (if any)."""
    live = {
        c.purpose_id: c
        for c in Consent.objects.filter(participant=participant).exclude(state=Consent.REVOKED)
    }
    purposes = Purpose.objects.select_related("permission").prefetch_related("modifiers")
    return [(p, live.get(p.pk)) for p in purposes]


def consent_history(*, participant: Participant):
    """This participant's consent events, newest first, with ledger indexes once sealed."""
    return (
        ConsentEvent.objects.filter(consent__participant=participant)
        .select_related("consent__purpose", "ledger_entry")
        .order_by("-created_at", "-ledger_entry_id")
    )


def participant_credential_ids(*, participant: Participant) -> list[str]:
    ids = [participant.enrolment_credential_id]
    ids += list(
        Consent.objects.filter(participant=participant).order_by("granted_at").values_list("credential_id", flat=True)
    )
    return ids


def consent_views_by_participant(*, participant_ids) -> dict[int, list[decisions.ConsentView]]:
    """Every consent of these participants, as the rule reads them, in two queries
    whatever the number of participants (bulk checks rely on this)."""
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
    views: dict[int, list[decisions.ConsentView]] = {pid: [] for pid in participant_ids}
    # Only the time limit (TS) reads the grant date; converting 50,000 timestamps costs
    # more than the query, so fetch them only when some purpose has one.
    dated = any(decisions.TS in p["modifiers"] for p in purposes.values())
    rows = Consent.objects.filter(participant__id__any=participant_ids).values_list(
        "pk", "participant_id", "purpose_id", "state", "granted_at" if dated else "pk"
    )
    for pk, participant_id, purpose_id, state, granted_at in rows:
        views[participant_id].append(
            decisions.ConsentView(
                consent_id=pk, state=state, granted_on=granted_at.date() if dated else None,
                **purposes[purpose_id],
            )
        )
    return views


def consent_views(*, participant: Participant) -> list[decisions.ConsentView]:
    return consent_views_by_participant(participant_ids=[participant.pk])[participant.pk]


def disease_lineage(*, disease_id: str) -> tuple[str, ...]:
    """The disease and its ancestors, nearest first; just the id when no hierarchy is loaded."""
    if not disease_id:
        return ()
    lineage = [disease_id]
    parents = dict(Disease.objects.values_list("id", "parent_id"))
    while parents.get(lineage[-1]) and parents[lineage[-1]] not in lineage:
        lineage.append(parents[lineage[-1]])
    return tuple(lineage)


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


def consent_evidence_bulk(*, consent_ids) -> dict[int, dict]:
    """Per consent: its credential, state and the ledger position of its latest event, in
    one query (every consent has at least its grant event). Inclusion proofs are fetched
    per index from the ledger API when needed."""
    slugs = dict(Purpose.objects.values_list("pk", "slug"))
    events = ConsentEvent.objects.filter(consent__id__any=consent_ids).order_by("consent_id", "-created_at")
    if connection.features.can_distinct_on_fields:
        events = events.distinct("consent_id")  # PostgreSQL: only the latest row per consent
    # The ledger index names the event; its time is in the sealed leaf.
    rows = events.values_list(
        "consent_id", "consent__credential_id", "consent__state", "consent__purpose_id", "action",
        "ledger_entry__index",
    )
    evidence = {}
    for consent_id, credential_id, state, purpose_id, action, index in rows:
        if consent_id not in evidence:
            evidence[consent_id] = {
                "credential": credential_id, "consent_state": state, "purpose": slugs[purpose_id],
                "latest_event": {"action": action, "ledger_index": index},
            }
    return evidence


_DEPTH = {decisions.NRES: 0, decisions.GRU: 1, decisions.HMB: 2, decisions.POA: 2, decisions.DS: 3}


def purpose_for_use(*, use: decisions.Use) -> Purpose | None:
    """The narrowest purpose whose consent would cover this use: the one a request asks for.

    Narrowest means deepest in the DUO hierarchy, then the most modifiers the study meets."""
    candidates = []
    for purpose in Purpose.objects.prefetch_related("modifiers"):
        view = decisions.ConsentView(
            consent_id=0, state="granted", permission=purpose.permission_id, disease_id=purpose.disease_id,
            modifiers=frozenset(m.id for m in purpose.modifiers.all()), params=purpose.modifier_params,
            granted_on=use.today,
        )
        if not decisions.consent_covers(view, use):
            candidates.append((_DEPTH.get(purpose.permission_id, 0), len(view.modifiers), -purpose.position, purpose))
    return max(candidates, key=lambda c: c[:3])[3] if candidates else None


def request_counts(*, use_ids) -> dict[int, dict[str, int]]:
    """How many were asked and how many answered, per study use; never who."""
    counts = {pk: {"asked": 0, "granted": 0, "declined": 0, "open": 0} for pk in use_ids}
    rows = ConsentRequest.objects.filter(use_id__in=use_ids).values("use_id", "status").annotate(n=Count("id"))
    for row in rows:
        counts[row["use_id"]][row["status"]] = row["n"]
        counts[row["use_id"]]["asked"] += row["n"]
    return counts


def open_requests(*, participant: Participant):
    return (
        ConsentRequest.objects.filter(participant=participant, status=ConsentRequest.OPEN)
        .select_related("use__study", "use__permission", "purpose")
        .order_by("-created_at")
    )


def withdrawal_feed(*, custodian: Custodian, since: int, limit: int):
    """Instructions for this custodian's samples after cursor `since`, oldest first."""
    return (
        WithdrawalInstruction.objects.filter(sample__custodian=custodian, seq__gt=since)
        .select_related("sample", "withdrawal", "confirmation_entry")
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


_FHIR_STATUS = {Consent.GRANTED: "active", Consent.SUSPENDED: "inactive", Consent.REVOKED: "rejected"}
DUO_SYSTEM = "http://purl.obolibrary.org/obo/duo.owl"


def consent_fhir(*, consent: Consent, credential: dict) -> dict:
    """The consent as a FHIR R4 (4.0.1) Consent resource.

    The patient is named only by pseudonym; the purpose and modifiers are DUO codes; the
    verifiable credential rides along as the source attachment."""
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
    return {
        "resourceType": "Consent",
        "id": consent.credential_id.removeprefix("urn:uuid:"),
        "status": _FHIR_STATUS[consent.state],
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentcategorycodes",
                                  "code": "research"}]}],
        "patient": {"identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{consent.participant.pseudonym}"}},
        "dateTime": consent.updated_at.isoformat(),
        "policyRule": {"coding": [codes[0]]},
        "sourceAttachment": {
            "contentType": "application/ld+json",
            "title": "Consent verifiable credential (W3C VC Data Model 1.1)",
            "data": base64.b64encode(json.dumps(credential, sort_keys=True).encode()).decode(),
        },
        "provision": provision,
    }


def signing_dids(*, participant: Participant) -> list[str]:
    """The DIDs whose browser keys may sign this participant's decisions (none while custodial)."""
    if participant.key_custody != Participant.SELF_CUSTODY:
        return []
    return [
        key.did for key in identity_selectors.holder_keys(holder=str(participant.pseudonym))
        if key.custody == Participant.SELF_CUSTODY
    ]
