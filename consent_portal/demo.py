"""Demo data for the embedded default: purposes, a study, users, a custodian and samples.

Loading is idempotent: running it again changes nothing that is already there.
"""

from django.contrib.auth import get_user_model
from django.db import transaction

from consent_portal import services
from consent_portal.models import Custodian, Disease, Participant, Purpose, Sample, Study

PURPOSES = [
    {
        "slug": "general-research",
        "title": "General research use",
        "explanation": "Any research purpose, including studies of population origins or ancestry.",
        "permission": "DUO:0000042",
    },
    {
        "slug": "health-medical-research",
        "title": "Health, medical or biomedical research",
        "explanation": "Research on health, medicine or biology; not ancestry research.",
        "permission": "DUO:0000006",
    },
    {
        "slug": "diabetes-research",
        "title": "Research on diabetes",
        "explanation": "Research about diabetes mellitus and its complications only.",
        "permission": "DUO:0000007",
        "disease_id": "MONDO:0005015",
        "disease_label": "diabetes mellitus",
    },
    {
        "slug": "general-research-non-commercial",
        "title": "General research, non-commercial only",
        "explanation": "Any research purpose, but never by or for a commercial organisation.",
        "permission": "DUO:0000042",
        "modifiers": ["DUO:0000046"],
    },
]

DEMO_PASSWORDS = {"participant": "demo-participant-pw", "ethics": "demo-ethics-pw", "admin": "demo-admin-pw"}
# A fixed token so the README's curl examples work on the demo; never used outside DEBUG.
DEMO_CUSTODIAN_TOKEN = "demo-custodian-token-not-for-production"


# A slice of the MONDO disease hierarchy, so disease-specific consent covers sub-diseases.
DISEASES = [
    ("MONDO:0005015", "diabetes mellitus", None),
    ("MONDO:0005147", "type 1 diabetes mellitus", "MONDO:0005015"),
    ("MONDO:0005148", "type 2 diabetes mellitus", "MONDO:0005015"),
]


def diseases_load():
    for disease_id, label, parent in DISEASES:
        Disease.objects.update_or_create(id=disease_id, defaults={"label": label, "parent_id": parent})


def purposes_load():
    for position, spec in enumerate(PURPOSES):
        purpose, _ = Purpose.objects.update_or_create(
            slug=spec["slug"],
            defaults={
                "title": spec["title"],
                "explanation": spec["explanation"],
                "permission_id": spec["permission"],
                "disease_id": spec.get("disease_id", ""),
                "disease_label": spec.get("disease_label", ""),
                "position": position,
            },
        )
        purpose.modifiers.set(spec.get("modifiers", []))


def demo_load() -> dict:
    User = get_user_model()
    with transaction.atomic():
        diseases_load()
        purposes_load()
        if not Study.objects.filter(identifier="diabetes-genomics-2026").exists():
            study = services.study_submit(
                identifier="diabetes-genomics-2026",
                title="Genomic risk factors of type 2 diabetes",
                institution="University Hospital Research Institute",
                commercial=False,
                countries=["GB"],
                irb_reference="REC 26/NW/0042",
                will_publish=True,
                uses=[
                    {"permission": "DUO:0000006"},
                    {"permission": "DUO:0000007", "disease_id": "MONDO:0005148",
                     "disease_label": "type 2 diabetes mellitus"},
                ],
            )
            services.study_use_decide(use_id=study.uses.get(permission_id="DUO:0000006").pk, approve=True, member=None)
        if not Study.objects.filter(identifier="pharma-cohort-2026").exists():
            services.study_submit(
                identifier="pharma-cohort-2026",
                title="Drug-response cohort",
                institution="Example Pharma Ltd",
                commercial=True,
                for_profit=True,
                countries=["GB", "US"],
                uses=[{"permission": "DUO:0000042"}],
            )
        if not User.objects.filter(username="participant").exists():
            services.participant_sign_up(username="participant", password=DEMO_PASSWORDS["participant"])
        if not User.objects.filter(username="ethics").exists():
            services.ethics_member_create(username="ethics", password=DEMO_PASSWORDS["ethics"])
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser(username="admin", password=DEMO_PASSWORDS["admin"])
        custodian = Custodian.objects.filter(name="Demo biobank").first()
        if custodian is None:
            custodian, _ = services.custodian_create(name="Demo biobank", token=DEMO_CUSTODIAN_TOKEN)
        participant = Participant.objects.get(user__username="participant")
        # Assisted enrolment: the demo biobank enrolled the demo participant at collection.
        enrolment, _ = services.custodian_enrolment_ensure(custodian=custodian, participant=participant)
        if not Sample.objects.filter(custodian=custodian, identifier="S-0001").exists():
            services.sample_register(custodian=custodian, identifier="S-0001", participant=participant, kind="blood")
    return {"participant": participant, "custodian": custodian, "enrolment": enrolment}
