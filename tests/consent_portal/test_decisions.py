from datetime import date

import pytest

from consent_portal.decisions import (
    COL, DS, EVALUATED_MODIFIERS, GRU, GS, HMB, IRB, IS, MODIFIER_PARAMS, NCU, NMDS, NPOA, NPU,
    NPUNCU, NRES, PERMISSIONS, POA, PS, PUB, RTN, TS, US, ConsentView, Study, Use, decide,
    permission_covers, validate_modifier_params,
)
from consent_portal.duo import duo_rows

DIABETES = "MONDO:0005015"
TYPE_2_DIABETES = "MONDO:0005148"
ASTHMA = "MONDO:0004979"
TODAY = date(2026, 11, 24)


@pytest.mark.parametrize(
    "consented, requested, covered",
    [
        (NRES, GRU, True), (NRES, DS, True),
        (GRU, GRU, True), (GRU, HMB, True), (GRU, DS, True), (GRU, POA, True),
        (HMB, HMB, True), (HMB, DS, True), (HMB, GRU, False), (HMB, POA, False),
        (DS, DS, True), (DS, HMB, False), (DS, GRU, False),
        (POA, POA, True), (POA, HMB, False),
    ],
)
def test_the_duo_permission_hierarchy(consented, requested, covered):
    assert permission_covers(consented, requested) is covered


def view(state="granted", permission=GRU, disease="", modifiers=(), params=None, granted_on=TODAY):
    return ConsentView(consent_id=1, state=state, permission=permission, disease_id=disease,
                       modifiers=frozenset(modifiers), params=params or {}, granted_on=granted_on)


def use(permission=HMB, lineage=(), **study):
    return Use(permission=permission, study=Study(**study), today=TODAY, disease_lineage=lineage)


def codes(result):
    return [r.code for r in result[1]]


def test_an_active_covering_consent_permits():
    assert decide([view()], use())[0] == "permit"


def test_suspended_and_revoked_consents_deny_with_their_reason():
    assert codes(decide([view(state="suspended")], use())) == ["consent_suspended"]
    assert codes(decide([view(state="revoked")], use())) == ["consent_revoked"]


def test_no_consent_denies():
    assert codes(decide([], use())) == ["no_consent"]


def test_a_consent_that_does_not_cover_the_use_denies():
    assert codes(decide([view(permission=HMB)], use(GRU))) == ["purpose_not_covered"]


def test_disease_specific_consent_covers_its_disease_and_sub_diseases_only():
    ds = view(permission=DS, disease=DIABETES)
    assert decide([ds], use(DS, (DIABETES,)))[0] == "permit"
    assert decide([ds], use(DS, (TYPE_2_DIABETES, DIABETES)))[0] == "permit"
    assert codes(decide([ds], use(DS, (ASTHMA,)))) == ["disease_not_covered"]
    narrow = view(permission=DS, disease=TYPE_2_DIABETES)
    assert codes(decide([narrow], use(DS, (DIABETES,)))) == ["disease_not_covered"]


def test_any_one_active_covering_consent_is_enough():
    consents = [view(state="revoked"), view(permission=HMB)]
    assert decide(consents, use(DS, (DIABETES,)))[0] == "permit"


def test_a_modifier_the_rule_cannot_evaluate_fails_closed():
    assert codes(decide([view(modifiers=["DUO:0000024"])], use())) == ["modifier_not_evaluable"]


# Every modifier: its parameters on the consent, a study that meets it, one that does not,
# and the reason code the violation gives.
MODIFIER_CASES = {
    NCU: ({}, {}, {"commercial": True}, "commercial_use_excluded"),
    NPU: ({}, {}, {"for_profit": True}, "for_profit_excluded"),
    NPUNCU: ({}, {}, {"commercial": True}, "for_profit_or_commercial_excluded"),
    IRB: ({}, {"irb_reference": "ERB-2026-17"}, {}, "irb_approval_missing"),
    GS: ({"countries": ["GB", "FR"]}, {"countries": frozenset({"GB"})},
         {"countries": frozenset({"GB", "US"})}, "outside_permitted_countries"),
    TS: ({"months": 12}, {}, {"_granted_on": date(2025, 11, 24)}, "time_limit_passed"),
    COL: ({"collaborator": "Dr Ada Lovelace"}, {"collaborators": frozenset({"Dr Ada Lovelace"})},
          {"collaborators": frozenset({"Dr Other"})}, "collaborator_missing"),
    PUB: ({}, {"will_publish": True}, {}, "publication_not_committed"),
    RTN: ({}, {"returns_derived_data": True}, {}, "data_return_not_committed"),
    US: ({"users": ["u1", "u2"]}, {"investigators": frozenset({"u1"})},
         {"investigators": frozenset({"u1", "u3"})}, "user_not_approved"),
    PS: ({"project": "study"}, {"identifier": "study"}, {"identifier": "other"}, "other_project"),
    IS: ({"institutions": ["Uni A"]}, {"institution": "Uni A"}, {"institution": "Uni B"},
         "institution_not_approved"),
    NMDS: ({}, {}, {"methods_development": True}, "methods_development_excluded"),
    NPOA: ({}, {}, None, "ancestry_research_excluded"),
}


def test_every_evaluated_modifier_has_a_case():
    assert set(MODIFIER_CASES) == EVALUATED_MODIFIERS


def _consent_for(permission, modifier, params, granted_on=TODAY):
    disease = DIABETES if permission == DS else ""
    return view(permission=permission, disease=disease, modifiers=[modifier],
                params={modifier: params} if params else {}, granted_on=granted_on)


@pytest.mark.parametrize("permission", PERMISSIONS)
@pytest.mark.parametrize("modifier", sorted(MODIFIER_CASES))
def test_every_permission_against_every_modifier(permission, modifier):
    params, meets, breaks, code = MODIFIER_CASES[modifier]
    lineage = (DIABETES,) if permission == DS else ()
    consent = _consent_for(permission, modifier, params)
    if (modifier, permission) == (NPOA, POA):
        # A contradiction on its face: ancestry-only research with ancestry prohibited.
        assert codes(decide([consent], use(POA))) == [code]
        return
    assert decide([consent], use(permission, lineage, **meets))[0] == "permit"
    if modifier == NPOA:
        # Ancestry research is the one use NPOA removes; only consents covering POA reach it.
        if permission_covers(permission, POA):
            assert codes(decide([consent], use(POA))) == [code]
        return
    study = {k: v for k, v in breaks.items() if not k.startswith("_")}
    if "_granted_on" in breaks:
        consent = consent._replace(granted_on=breaks["_granted_on"])
    assert codes(decide([consent], use(permission, lineage, **study))) == [code]


def test_time_limit_counts_months_from_the_grant():
    consent = _consent_for(HMB, TS, {"months": 12}, granted_on=date(2025, 11, 25))
    assert decide([consent], use())[0] == "permit"  # TODAY is the last day
    consent = consent._replace(granted_on=date(2025, 11, 24))
    assert codes(decide([consent], use())) == ["time_limit_passed"]


def test_geographic_restriction_needs_the_study_to_name_its_countries():
    consent = _consent_for(HMB, GS, {"countries": ["GB"]})
    assert codes(decide([consent], use())) == ["outside_permitted_countries"]


def test_modifier_params_are_validated():
    assert validate_modifier_params([GS, NCU], {GS: {"countries": ["GB"]}}) == {}
    assert GS in validate_modifier_params([GS], {})
    assert TS in validate_modifier_params([TS], {TS: {"months": "twelve"}})
    assert NCU in validate_modifier_params([], {NCU: {}})
    assert set(MODIFIER_PARAMS) <= EVALUATED_MODIFIERS


def test_the_issue_list_of_modifiers_is_known_to_the_shipped_duo_terms():
    kinds = {row["id"]: row["kind"] for row in duo_rows()}
    for modifier in MODIFIER_CASES:
        assert kinds[modifier] == "modifier"
    for permission in PERMISSIONS:
        assert kinds[permission] == "permission"
