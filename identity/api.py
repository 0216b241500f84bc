"""POST /api/v1/credentials/verify: one verification service for VCs and VPs.

Authentication and permissions are the project's defaults (custodian bearer tokens), and
errors take the project's JSON shape through DRF exceptions. A well-formed request always
gets 200 with a check-by-check result, verified or not; only malformed requests are 4xx.
"""

from django.db import IntegrityError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from identity import selectors, services

MAX_JWT_LENGTH = 65_536


class VerifySerializer(serializers.Serializer):
    verifiable = serializers.JSONField(
        help_text="A credential or presentation: a JSON object (LD proof) or a compact JWT string."
    )
    challenge = serializers.CharField(required=False, max_length=512, help_text="The VP's expected challenge (nonce).")
    domain = serializers.CharField(required=False, max_length=255, help_text="The VP's expected domain (aud).")

    def validate_verifiable(self, value):
        if isinstance(value, dict):
            return value
        if isinstance(value, str) and value.count(".") == 2 and len(value) <= MAX_JWT_LENGTH:
            return value
        raise serializers.ValidationError("Give a JSON object (LD proof) or a compact JWT string.")


class CredentialVerifyView(APIView):
    # A credential or presentation is small, and verifying costs time per value (JSON-LD
    # expansion, canonicalization: a padded `type` of 40,000 entries held a worker 21 s):
    # the body's parser refuses more than this (consent_portal.api.parsers reads it).
    json_limits = {"max_depth": 16, "max_items": 64, "max_nodes": 2_000}

    @extend_schema(
        request=VerifySerializer,
        responses={200: OpenApiResponse(description="The check-by-check result (verified or not).")},
    )
    def post(self, request):
        serializer = VerifySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        challenge, domain = data.get("challenge"), data.get("domain")
        result = selectors.verifiable_verify(submitted=data["verifiable"], challenge=challenge, domain=domain)
        if result["kind"] == "presentation" and result["verified"]:
            try:
                services.presentation_challenge_record(domain=domain, challenge=challenge)
            except IntegrityError:
                # A concurrent request answered the same challenge first.
                result["checks"]["challenge"] = "failed: this challenge was already answered (replay)"
                result["errors"].append("challenge: this challenge was already answered (replay)")
                result["verified"] = False
        return Response(result)
