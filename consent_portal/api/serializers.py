from rest_framework import serializers

from consent_portal.models import ConsentCheck, DuoTerm, Participant


def _permission_term(value: str) -> str:
    if not DuoTerm.objects.filter(pk=value, kind=DuoTerm.PERMISSION).exists():
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


class SampleRequest(serializers.Serializer):
    sample = serializers.CharField(max_length=100)
    participant = serializers.UUIDField(help_text="The participant's pseudonymous code.")
    kind = serializers.ChoiceField(choices=["blood", "saliva", "tissue", "dna", "serum", "plasma", "urine"])

    def validate_participant(self, value):
        participant = Participant.objects.filter(pseudonym=value, user__isnull=False).first()
        if participant is None:
            raise serializers.ValidationError(f"No participant with code {value}.")
        return participant
