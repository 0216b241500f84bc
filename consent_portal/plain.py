"""What DUO codes mean, in words a participant understands.

The codes stay beside these words wherever they are shown (a custodian or a committee
member reads the codes; a participant reads the words). Every string goes through gettext.
"""

from django.utils.translation import gettext_lazy as _

from consent_portal import decisions

PERMISSIONS = {
    decisions.NRES: _("Any use, with no restriction at all"),
    decisions.GRU: _("Any kind of research, including studies of population origins or ancestry"),
    decisions.HMB: _("Health, medical or biomedical research (not ancestry research)"),
    decisions.DS: _("Research on one disease only"),
    decisions.POA: _("Research on population origins or ancestry only"),
}

# Titles of purposes the portal makes itself (a study's use asked exactly as it was).
PERMISSION_TITLES = {
    decisions.NRES: "Any use, without restriction",
    decisions.GRU: "General research use",
    decisions.HMB: "Health, medical or biomedical research",
    decisions.POA: "Research on population origins or ancestry",
}

MODIFIERS = {
    decisions.NCU: _("not for commercial use"),
    decisions.NPU: _("not by for-profit organisations"),
    decisions.NPUNCU: _("not by for-profit organisations and not for commercial use"),
    decisions.IRB: _("only with approval from the researchers' own ethics committee"),
    decisions.GS: _("only in the countries named"),
    decisions.TS: _("only for a limited time after you consent"),
    decisions.COL: _("only in collaboration with a named researcher"),
    decisions.PUB: _("only if the results are published"),
    decisions.RTN: _("only if derived data are returned to the biobank"),
    decisions.US: _("only by named researchers"),
    decisions.PS: _("only for one study"),
    decisions.IS: _("only at named institutions"),
    decisions.NMDS: _("not for developing general research methods"),
    decisions.NPOA: _("never for population origins or ancestry research"),
}


def permission_words(permission: str) -> str:
    return str(PERMISSIONS.get(permission, permission))


def modifier_words(modifier: str) -> str:
    return str(MODIFIERS.get(modifier, modifier))
