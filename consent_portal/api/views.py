from django.db import IntegrityError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from consent_portal import services
from consent_portal.api.serializers import ConsentCheckRequest, ConsentCheckResponse, SampleRequest
from consent_portal.models import ConsentCheck
from ledger import selectors as ledger_selectors


def _check_ledger(check: ConsentCheck) -> dict:
    return ledger_selectors.entry_evidence(entry_id=check.ledger_entry_id) or {
        "sealed": False,
        "detail": "The check is recorded and will be sealed shortly; fetch it again for its proof.",
    }


def _check_body(check: ConsentCheck) -> dict:
    return ConsentCheckResponse(check, context={"check_ledger": _check_ledger}).data


class ConsentCheckView(APIView):
    @extend_schema(
        request=ConsentCheckRequest,
        responses={
            200: ConsentCheckResponse,
            400: OpenApiResponse(description="Malformed JSON, a missing field or an unknown purpose."),
            401: OpenApiResponse(description="Missing or unknown bearer token."),
            404: OpenApiResponse(
                ConsentCheckResponse,
                description="Unknown sample or study: the decision is deny and the check is recorded.",
            ),
            413: OpenApiResponse(description="Body too large."),
        },
        summary="May this sample be released to this study for this purpose?",
    )
    def post(self, request):
        question = ConsentCheckRequest(data=request.data)
        question.is_valid(raise_exception=True)
        outcome = services.consent_check(custodian=request.user, **question.validated_data)
        body = _check_body(outcome.check)
        if outcome.unknown:
            body = {"error": outcome.unknown, "detail": outcome.check.reasons[0]["message"], **body}
            return Response(body, status=status.HTTP_404_NOT_FOUND)
        return Response(body)


class ConsentCheckDetailView(APIView):
    @extend_schema(responses={200: ConsentCheckResponse}, summary="A past check, with its own ledger proof")
    def get(self, request, check_id):
        # A custodian sees only its own checks.
        check = ConsentCheck.objects.filter(pk=check_id, custodian=request.user).first()
        if check is None:
            raise NotFound(f"No consent check {check_id} for this custodian.")
        return Response(_check_body(check))


class SampleView(APIView):
    @extend_schema(request=SampleRequest, responses={201: OpenApiResponse(description="Registered")},
                   summary="Register a sample against a participant's pseudonymous code")
    def post(self, request):
        given = SampleRequest(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        try:
            sample = services.sample_register(
                custodian=request.user, identifier=data["sample"], participant=data["participant"], kind=data["kind"]
            )
        except IntegrityError:
            return Response(
                {"error": "duplicate_sample", "detail": f"Sample '{data['sample']}' is already registered.",
                 "fields": {"sample": ["already registered"]}},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(
            {"sample": sample.identifier, "participant": str(data["participant"].pseudonym), "kind": sample.kind},
            status=status.HTTP_201_CREATED,
        )
