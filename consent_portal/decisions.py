"""The consent-check rule, as pure functions over plain values (no database).

A check permits only when an active consent covers the use the study was approved for,
in the DUO permission hierarchy, and every modifier on that consent is met by the study.
Anything the rule cannot evaluate is a deny: custodians release samples on a permit, so
the rule fails closed.
"""

from dataclasses import dataclass, field

NRES = "DUO:0000004"  # no restriction
GRU = "DUO:0000042"  # general research use
HMB = "DUO:0000006"  # health or medical or biomedical research
DS = "DUO:0000007"  # disease specific research
POA = "DUO:0000011"  # population origins or ancestry research only
NCU = "DUO:0000046"  # non-commercial use only
NPUNCU = "DUO:0000018"  # not for profit, non commercial use only

# Each permission and the permissions it directly covers (DUO's own hierarchy: HMB excludes
# ancestry research, which GRU includes).
_COVERS = {NRES: {GRU}, GRU: {HMB, POA}, HMB: {DS}, DS: set(), POA: set()}

# Modifiers this version evaluates; any other modifier on a consent denies.
_COMMERCIAL_MODIFIERS = {NCU, NPUNCU}


def permission_covers(consented: str, requested: str) -> bool:
    """True when a consent to `consented` allows a use coded `requested`."""
    if consented == requested:
        return True
    return any(permission_covers(child, requested) for child in _COVERS.get(consented, ()))


@dataclass(frozen=True)
class Use:
    """What the study was approved to do."""

    permission: str
    disease_id: str
    commercial: bool


@dataclass(frozen=True)
class ConsentView:
    """The parts of one consent the rule reads."""

    consent_id: int
    state: str
    permission: str
    disease_id: str
    modifiers: frozenset = field(default_factory=frozenset)


@dataclass
class Reason:
    code: str
    message: str

    def as_dict(self):
        return {"code": self.code, "message": self.message}


def consent_covers(consent: ConsentView, use: Use) -> list[Reason]:
    """The reasons this consent does not cover the use; empty when it does."""
    if not permission_covers(consent.permission, use.permission):
        return [Reason("purpose_not_covered",
                       f"The consent to {consent.permission} does not cover {use.permission}.")]
    if consent.permission == DS and consent.disease_id != use.disease_id:
        return [Reason("disease_not_covered",
                       f"The consent covers research on {consent.disease_id} only.")]
    reasons = []
    for modifier in sorted(consent.modifiers):
        if modifier in _COMMERCIAL_MODIFIERS:
            if use.commercial:
                reasons.append(Reason("commercial_use_excluded",
                                      f"The consent excludes commercial use ({modifier})."))
        else:
            reasons.append(Reason("modifier_not_evaluable",
                                  f"The consent carries modifier {modifier}, which this portal "
                                  "cannot check yet; denied to be safe."))
    return reasons


def decide(consents: list[ConsentView], use: Use) -> tuple[str, list[Reason], ConsentView | None]:
    """Decide over all of one participant's consents for one approved use.

    Returns (decision, reasons, the consent the evidence should name).
    """
    covering = [c for c in consents if not consent_covers(c, use)]
    active = [c for c in covering if c.state == "granted"]
    if active:
        return "permit", [Reason("consent_active", "An active consent covers this use.")], active[0]
    suspended = [c for c in covering if c.state == "suspended"]
    if suspended:
        return "deny", [Reason("consent_suspended",
                               "The participant has suspended the consent covering this use.")], suspended[0]
    if covering:
        return "deny", [Reason("consent_revoked",
                               "The participant has revoked the consent covering this use.")], covering[0]
    live = [c for c in consents if c.state != "revoked"]
    if not live:
        return "deny", [Reason("no_consent", "The participant has no consent for any purpose.")], None
    # The closest miss: the reasons of each live consent that does not cover the use.
    reasons = [r for c in live for r in consent_covers(c, use)]
    return "deny", reasons, live[0]
