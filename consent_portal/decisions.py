"""The consent-check rule, as pure functions over plain values (no database).

A check permits only when an active consent covers the use the study was approved for,
in the DUO permission hierarchy, and the study meets every modifier on that consent.
Anything the rule cannot evaluate is a deny: custodians release samples on a permit, so
the rule fails closed.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

NRES = "DUO:0000004"  # no restriction
GRU = "DUO:0000042"  # general research use
HMB = "DUO:0000006"  # health or medical or biomedical research
DS = "DUO:0000007"  # disease specific research
POA = "DUO:0000011"  # population origins or ancestry research only

NCU = "DUO:0000046"  # non-commercial use only
NPU = "DUO:0000045"  # not for profit organisation use only
NPUNCU = "DUO:0000018"  # not for profit, non commercial use only
IRB = "DUO:0000021"  # ethics approval required
GS = "DUO:0000022"  # geographical restriction
TS = "DUO:0000025"  # time limit on use
COL = "DUO:0000020"  # collaboration required
PUB = "DUO:0000019"  # publication required
RTN = "DUO:0000029"  # return to database or resource
US = "DUO:0000026"  # user specific restriction
PS = "DUO:0000027"  # project specific restriction
IS = "DUO:0000028"  # institution specific restriction
NMDS = "DUO:0000015"  # no general methods research
NPOA = "DUO:0000044"  # population origins or ancestry research prohibited

PERMISSIONS = (NRES, GRU, HMB, DS, POA)

# Each permission and the permissions it directly covers. DUO's own definitions: HMB
# "does not include the study of population origins or ancestry", which GRU includes.
_COVERS = {NRES: {GRU}, GRU: {HMB, POA}, HMB: {DS}, DS: set(), POA: set()}

# Modifiers that need a parameter on the purpose, and its name and type.
MODIFIER_PARAMS = {
    GS: ("countries", list),  # ISO 3166-1 alpha-2 codes
    TS: ("months", int),  # months after the consent was granted
    COL: ("collaborator", str),
    US: ("users", list),
    PS: ("project", str),  # a study identifier
    IS: ("institutions", list),
}


def permission_covers(consented: str, requested: str) -> bool:
    """True when a consent to `consented` allows a use coded `requested`."""
    if consented == requested:
        return True
    return any(permission_covers(child, requested) for child in _COVERS.get(consented, ()))


@dataclass(frozen=True)
class Study:
    identifier: str = "study"
    institution: str = "institution"
    commercial: bool = False
    for_profit: bool = False
    countries: frozenset = frozenset()
    collaborators: frozenset = frozenset()
    investigators: frozenset = frozenset()
    irb_reference: str = ""
    will_publish: bool = False
    returns_derived_data: bool = False
    methods_development: bool = False


@dataclass(frozen=True)
class Use:
    """What the study was approved to do, and on which day the question is asked."""

    permission: str
    study: Study
    today: date
    # The use's disease followed by its ancestors (empty when the use names none).
    disease_lineage: tuple = ()


class ConsentView(NamedTuple):
    """The parts of one consent the rule reads. A tuple, not a dataclass: bulk checks build
    one per consent, 50,000 at a time."""

    consent_id: int
    state: str
    permission: str
    disease_id: str = ""
    modifiers: frozenset = frozenset()
    params: dict = {}  # never mutated
    granted_on: date | None = None


@dataclass
class Reason:
    code: str
    message: str

    def as_dict(self):
        return {"code": self.code, "message": self.message}


def _add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    for last in (31, 30, 29, 28):
        try:
            return date(year, month, min(day.day, last))
        except ValueError:
            continue
    raise ValueError(day)


def _param(consent: ConsentView, modifier: str):
    return consent.params.get(modifier, {}).get(MODIFIER_PARAMS[modifier][0])


# modifier -> (test over (consent, use), reason code, sentence)
_RULES: dict[str, tuple[Callable[[ConsentView, Use], bool], str, str]] = {
    NCU: (lambda c, u: not u.study.commercial, "commercial_use_excluded",
          "The consent excludes commercial use (NCU)."),
    NPU: (lambda c, u: not u.study.for_profit, "for_profit_excluded",
          "The consent excludes for-profit organisations (NPU)."),
    NPUNCU: (lambda c, u: not u.study.commercial and not u.study.for_profit, "for_profit_or_commercial_excluded",
             "The consent excludes for-profit organisations and commercial use (NPUNCU)."),
    IRB: (lambda c, u: bool(u.study.irb_reference), "irb_approval_missing",
          "The consent requires local ethics (IRB/ERB) approval, which the study has not documented."),
    GS: (lambda c, u: bool(u.study.countries) and u.study.countries <= set(_param(c, GS) or ()),
         "outside_permitted_countries", "The study uses data outside the countries the consent allows (GS)."),
    TS: (lambda c, u: c.granted_on is not None and _param(c, TS) is not None
         and u.today < _add_months(c.granted_on, _param(c, TS)),
         "time_limit_passed", "The consent's time limit on use has passed (TS)."),
    COL: (lambda c, u: _param(c, COL) in u.study.collaborators, "collaborator_missing",
          "The consent requires collaboration with a named investigator the study does not include (COL)."),
    PUB: (lambda c, u: u.study.will_publish, "publication_not_committed",
          "The consent requires the study to publish its results (PUB)."),
    RTN: (lambda c, u: u.study.returns_derived_data, "data_return_not_committed",
          "The consent requires derived data to be returned to the biobank (RTN)."),
    US: (lambda c, u: bool(u.study.investigators) and u.study.investigators <= set(_param(c, US) or ()),
         "user_not_approved", "The study's users are not all approved users of this consent (US)."),
    PS: (lambda c, u: u.study.identifier == _param(c, PS), "other_project",
         "The consent is limited to another project (PS)."),
    IS: (lambda c, u: u.study.institution in (_param(c, IS) or ()), "institution_not_approved",
         "The consent is limited to other institutions (IS)."),
    NMDS: (lambda c, u: not u.study.methods_development, "methods_development_excluded",
           "The consent excludes methods development research (NMDS)."),
    NPOA: (lambda c, u: u.permission != POA, "ancestry_research_excluded",
           "The consent excludes population origins or ancestry research (NPOA)."),
}
EVALUATED_MODIFIERS = frozenset(_RULES)


def consent_covers(consent: ConsentView, use: Use) -> list[Reason]:
    """The reasons this consent does not cover the use; empty when it does."""
    if not permission_covers(consent.permission, use.permission):
        return [Reason("purpose_not_covered",
                       f"The consent to {consent.permission} does not cover {use.permission}.")]
    if consent.permission == DS and consent.disease_id not in use.disease_lineage:
        return [Reason("disease_not_covered",
                       f"The consent covers research on {consent.disease_id} (and its sub-diseases) only.")]
    reasons = []
    for modifier in sorted(consent.modifiers):
        rule = _RULES.get(modifier)
        if rule is None:
            reasons.append(Reason("modifier_not_evaluable",
                                  f"The consent carries modifier {modifier}, which this portal "
                                  "cannot check; denied to be safe."))
        elif not rule[0](consent, use):
            reasons.append(Reason(rule[1], rule[2]))
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


def validate_modifier_params(modifiers, params: dict) -> dict[str, str]:
    """Errors in a purpose's modifier parameters, keyed by DUO id; empty when valid."""
    errors = {}
    for modifier in modifiers:
        if modifier not in MODIFIER_PARAMS:
            continue
        name, kind = MODIFIER_PARAMS[modifier]
        value = params.get(modifier, {}).get(name)
        if not isinstance(value, kind) or isinstance(value, bool) or not value:
            errors[modifier] = f"{modifier} needs '{name}' ({kind.__name__})."
    for modifier in params:
        if modifier not in modifiers:
            errors[modifier] = f"Parameters given for {modifier}, which the purpose does not carry."
    return errors
