from rest_framework import serializers

from consent_portal import selectors
from consent_portal.models import ConsentCheck, Study
from consent_portal.services import BULK_LIMIT


def _permission_term(value: str) -> str:
    if value not in selectors.duo_permission_ids():
        raise serializers.ValidationError(
            f"Unknown purpose '{value}': give a GA4GH DUO permission id such as DUO:0000042."
        )
    return value


class ConsentCheckRequest(serializers.Serializer):
    sample = serializers.CharField(max_length=100)
    study = serializers.CharField(max_length=64)
    purpose = serializers.RegexField(
        r"^DUO:\d{7}$",
        error_messages={"invalid": "Give a GA4GH DUO id such as DUO:0000042."},
    )

    def validate_purpose(self, value):
        return _permission_term(value)


# Outside the class: a field declared on a serializer becomes one of its fields.
_CREATED_AT = serializers.DateTimeField()


class ConsentCheckResponse(serializers.ModelSerializer):
    check = serializers.UUIDField(source="id")
    reasons = serializers.JSONField()
    evidence = serializers.JSONField()
    ledger = serializers.SerializerMethodField()

    class Meta:
        model = ConsentCheck
        fields = ["check", "decision", "reasons", "evidence", "ledger", "created_at"]

    def get_ledger(self, check) -> dict:
        """Where the check itself sits on the ledger: pending until the sealer runs."""
        return self.context["check_ledger"](check)

    def to_representation(self, check) -> dict:
        # What the fields above give (tested), without building and binding them for every
        # check: the answer a custodian waits for before releasing a sample.
        return {
            "check": str(check.id),
            "decision": check.decision,
            "reasons": check.reasons,
            "evidence": check.evidence,
            "ledger": self.get_ledger(check),
            "created_at": _CREATED_AT.to_representation(check.created_at),
        }


class SampleRequest(serializers.Serializer):
    sample = serializers.CharField(max_length=100)
    participant = serializers.RegexField(
        r"^[A-Za-z0-9-]{1,64}$",
        help_text="This custodian's reference for the participant (POST /api/v1/enrolments gave it).",
        error_messages={"invalid": "Give this custodian's reference for the participant, such as P-0a1b2c...."})
    kind = serializers.ChoiceField(choices=["blood", "saliva", "tissue", "dna", "serum", "plasma", "urine"])


class EnrolmentRequest(serializers.Serializer):
    code = serializers.RegexField(
        r"^[A-Za-z0-9 -]{1,40}$", help_text="The donation code the participant handed over.",
        error_messages={"invalid": "Give the donation code as the participant has it, such as ABCD-EFGH-JKMN."})


class BulkCheckRequest(serializers.Serializer):
    study = serializers.CharField(max_length=64)
    purpose = serializers.RegexField(
        r"^DUO:\d{7}$", error_messages={"invalid": "Give a GA4GH DUO id such as DUO:0000042."}
    )
    samples = serializers.JSONField()

    def validate_purpose(self, value):
        return _permission_term(value)

    def validate_study(self, value):
        study = Study.objects.filter(identifier=value).first()
        if study is None:
            raise serializers.ValidationError(f"No study '{value}' is registered.")
        return study

    def validate_samples(self, value):
        # A plain loop rather than a CharField per item: 10,000 child fields cost ~100 ms.
        if not isinstance(value, list) or not value:
            raise serializers.ValidationError("Give a non-empty list of sample identifiers.")
        if len(value) > BULK_LIMIT:
            raise serializers.ValidationError(f"At most {BULK_LIMIT:,} samples per request.")
        for position, item in enumerate(value):
            if not isinstance(item, str) or not item or len(item) > 100:
                raise serializers.ValidationError(
                    f"Item {position}: a sample identifier is a non-empty string of at most 100 characters."
                )
        if len(set(value)) != len(value):
            raise serializers.ValidationError("Each sample may appear once.")
        return value


class WithdrawalFeedQuery(serializers.Serializer):
    since = serializers.IntegerField(min_value=0, max_value=2**63 - 1, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=500)


class StudyUseRequest(serializers.Serializer):
    permission = serializers.RegexField(r"^DUO:\d{7}$", error_messages={"invalid": "Give a GA4GH DUO id."})
    disease_id = serializers.RegexField(r"^(?:[A-Z]{1,16}:\d{1,15})?$", max_length=32, required=False, allow_blank=True,
                                        default="", help_text="A MONDO id such as MONDO:0005148, for DUO:0000007.")
    disease_label = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")

    def validate_permission(self, value):
        return _permission_term(value)

    def validate(self, data):
        if (data["permission"] == "DUO:0000007") != bool(data["disease_id"]):
            raise serializers.ValidationError({"disease_id": "Disease specific research (DUO:0000007) needs a "
                                                             "disease id, and only it takes one."})
        return data


class StudyRequest(serializers.Serializer):
    identifier = serializers.SlugField(max_length=64)
    title = serializers.CharField(max_length=300)
    institution = serializers.CharField(max_length=300)
    commercial = serializers.BooleanField()
    for_profit = serializers.BooleanField(default=False)
    countries = serializers.ListField(child=serializers.RegexField(r"^[A-Z]{2}$"), default=list)
    collaborators = serializers.ListField(child=serializers.CharField(max_length=200), default=list)
    investigators = serializers.ListField(child=serializers.CharField(max_length=200), default=list)
    irb_reference = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    will_publish = serializers.BooleanField(default=False)
    returns_derived_data = serializers.BooleanField(default=False)
    methods_development = serializers.BooleanField(default=False)
    summary = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)
    uses = StudyUseRequest(many=True, allow_empty=False, max_length=50)

    def validate_uses(self, value):
        seen = set()
        for position, use in enumerate(value):
            key = (use["permission"], use["disease_id"])
            if key in seen:
                raise serializers.ValidationError(
                    f"Item {position}: the study already asks for {use['permission']}"
                    f"{' for ' + use['disease_id'] if use['disease_id'] else ''}; list each use once.")
            seen.add(key)
        return value

    def validate_identifier(self, value):
        if Study.objects.filter(identifier=value).exists():
            raise serializers.ValidationError(f"Study '{value}' already exists.")
        return value
