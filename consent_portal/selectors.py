"""Every read in the consent domain that is more than a one-line lookup."""

import hashlib

from django.db.models import Count, Prefetch

from consent_portal import decisions
from consent_portal.models import (
    Consent,
    ConsentCheck,
    ConsentEvent,
    Custodian,
    Participant,
    Purpose,
    Study,
    StudyUse,
)


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


def consent_views(*, participant: Participant) -> list[decisions.ConsentView]:
    consents = Consent.objects.filter(participant=participant).select_related("purpose").prefetch_related(
        Prefetch("purpose__modifiers")
    )
    return [
        decisions.ConsentView(
            consent_id=c.pk,
            state=c.state,
            permission=c.purpose.permission_id,
            disease_id=c.purpose.disease_id,
            modifiers=frozenset(m.id for m in c.purpose.modifiers.all()),
        )
        for c in consents
    ]


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
