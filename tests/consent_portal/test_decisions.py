import pytest

from consent_portal.decisions import DS, GRU, HMB, NCU, NRES, POA, ConsentView, Use, decide, permission_covers

DIABETES = "MONDO:0005015"
ASTHMA = "MONDO:0004979"


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


def view(state="granted", permission=GRU, disease="", modifiers=()):
    return ConsentView(consent_id=1, state=state, permission=permission, disease_id=disease,
                       modifiers=frozenset(modifiers))


def codes(result):
    return [r.code for r in result[1]]


def test_an_active_covering_consent_permits():
    assert decide([view()], Use(HMB, "", False))[0] == "permit"


def test_suspended_and_revoked_consents_deny_with_their_reason():
    assert codes(decide([view(state="suspended")], Use(HMB, "", False))) == ["consent_suspended"]
    assert codes(decide([view(state="revoked")], Use(HMB, "", False))) == ["consent_revoked"]


def test_no_consent_denies():
    assert codes(decide([], Use(HMB, "", False))) == ["no_consent"]


def test_a_consent_that_does_not_cover_the_use_denies():
    assert codes(decide([view(permission=HMB)], Use(GRU, "", False))) == ["purpose_not_covered"]


def test_disease_specific_consent_covers_only_its_disease():
    ds = view(permission=DS, disease=DIABETES)
    assert decide([ds], Use(DS, DIABETES, False))[0] == "permit"
    assert codes(decide([ds], Use(DS, ASTHMA, False))) == ["disease_not_covered"]


def test_non_commercial_modifier_denies_commercial_studies_only():
    ncu = view(modifiers=[NCU])
    assert decide([ncu], Use(HMB, "", False))[0] == "permit"
    assert codes(decide([ncu], Use(HMB, "", True))) == ["commercial_use_excluded"]


def test_a_modifier_the_rule_cannot_evaluate_fails_closed():
    assert codes(decide([view(modifiers=["DUO:0000022"])], Use(HMB, "", False))) == ["modifier_not_evaluable"]


def test_any_one_active_covering_consent_is_enough():
    consents = [view(state="revoked"), view(permission=HMB)]
    assert decide(consents, Use(DS, DIABETES, False))[0] == "permit"
