import re

from django.db import IntegrityError
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from consent_portal import ops, selectors, services
from consent_portal.api.serializers import (
    BulkCheckRequest,
    ConsentCheckRequest,
    ConsentCheckResponse,
    EnrolmentRequest,
    SampleRequest,
    StudyRequest,
    WithdrawalFeedQuery,
)
from consent_portal.models import ConsentCheck, WithdrawalInstruction
from ledger import selectors as ledger_selectors


_CHECK_PENDING = {
    "sealed": False,
    "detail": "The check is recorded and will be sealed shortly; fetch it again for its proof.",
}


# The openings of its own check entries a custodian is handed: they prove the blinded entry
# is this check (ledger.blinding), and name nothing the custodian did not send or hold.
CHECK_OPENINGS = ("check", "custodian", "sample", "study", "credential")
BULK_OPENINGS = ("check", "custodian", "study")


def _with_openings(receipt: dict | None, entry_id: int, fields) -> dict | None:
    if receipt is None:
        return None
    openings = ledger_selectors.entry_openings(entry_ids=[entry_id], fields=fields).get(entry_id)
    return ledger_selectors.receipt_with_openings(receipt, openings)


def _check_ledger(check: ConsentCheck) -> dict:
    receipt = ledger_selectors.entry_receipt(entry_id=check.ledger_entry_id)
    return _with_openings(receipt, check.ledger_entry_id, CHECK_OPENINGS) or dict(_CHECK_PENDING)


def _fresh_check_ledger(check: ConsentCheck) -> dict:
    receipt = ledger_selectors.entry_receipt_just_appended(entry_id=check.ledger_entry_id)
    if receipt is None:
        return dict(_CHECK_PENDING)
    # The openings the check was just written with (services._check_record), not read back.
    openings = {k: v for k, v in (check.ledger_openings or {}).items() if k in CHECK_OPENINGS}
    return ledger_selectors.receipt_with_openings(receipt, openings)


def _check_body(check: ConsentCheck, *, fresh: bool = False) -> dict:
    ledger = _fresh_check_ledger if fresh else _check_ledger
    return ConsentCheckResponse(check, context={"check_ledger": ledger}).data


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
            409: OpenApiResponse(description="idempotency_key_reused: the Idempotency-Key was sent with another question."),
            413: OpenApiResponse(description="Body too large."),
        },
        parameters=[OpenApiParameter(
            "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
            description="Any 1 to 128 printable ASCII characters, new for each question. A retry with the same key "
                        "(after a timeout, say) gets the first answer again, with Idempotent-Replayed: true, "
                        "instead of recording a second check.")],
        summary="May this sample be released to this study for this purpose?",
    )
    def post(self, request):
        key = request.headers.get("Idempotency-Key")
        if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
            raise ValidationError({"Idempotency-Key": ["Give 1 to 128 printable ASCII characters."]})
        question = ConsentCheckRequest(data=request.data)
        question.is_valid(raise_exception=True)
        asked = question.validated_data
        if key is not None:
            earlier = _earlier_check(request.user, key, asked)
            if earlier is not None:
                return earlier
        try:
            outcome = services.consent_check(custodian=request.user, idempotency_key=key, **asked)
        except IntegrityError:
            # The same key, sent twice at once: the first to be written answers both.
            earlier = _earlier_check(request.user, key, asked) if key is not None else None
            if earlier is None:
                raise
            return earlier
        ops.count_check(outcome.check.decision)
        return _check_answer(outcome.check, unknown=outcome.unknown, fresh=True)


_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")


def _check_answer(check: ConsentCheck, *, unknown: str | None, fresh: bool = False) -> Response:
    body = _check_body(check, fresh=fresh)
    if unknown:
        body = {"error": unknown, "detail": check.reasons[0]["message"], **body}
        return Response(body, status=status.HTTP_404_NOT_FOUND)
    return Response(body)


def _earlier_check(custodian, key: str, asked: dict) -> Response | None:
    """The answer already given under this Idempotency-Key (a client's retry), or None; a
    409 when the key was used for another question."""
    check = ConsentCheck.objects.filter(custodian=custodian, idempotency_key=key).first()
    if check is None:
        return None
    if (check.sample_identifier, check.study_identifier, check.purpose_id) != (
            asked["sample"], asked["study"], asked["purpose"]):
        return Response({"error": "idempotency_key_reused",
                         "detail": f"Idempotency-Key {key!r} was used for another question (check {check.id})."},
                        status=status.HTTP_409_CONFLICT)
    reasons = check.reasons or []
    unknown = reasons[0]["code"] if reasons and reasons[0].get("code") in ("unknown_sample", "unknown_study") else None
    response = _check_answer(check, unknown=unknown)
    response["Idempotent-Replayed"] = "true"
    return response


class ConsentCheckDetailView(APIView):
    @extend_schema(responses={200: ConsentCheckResponse}, summary="A past check, with its own ledger proof")
    def get(self, request, check_id):
        # A custodian sees only its own checks.
        check = ConsentCheck.objects.filter(pk=check_id, custodian=request.user).first()
        if check is None:
            raise NotFound(f"No consent check {check_id} for this custodian.")
        return Response(_check_body(check))


# The JSON error shape every endpoint of this API answers with (api/errors.py).
_ERROR = inline_serializer("ApiError", {
    "error": serializers.CharField(help_text="A code, e.g. invalid, unknown_participant, superseded."),
    "detail": serializers.CharField(help_text="A sentence naming the problem."),
    "fields": serializers.DictField(required=False, help_text="Field name -> messages, for invalid input."),
})
_ENROLMENT = inline_serializer("Enrolment", {
    "participant": serializers.CharField(help_text="This custodian's reference for the participant (P-...)."),
    "enrolled_at": serializers.DateTimeField(),
})
_SAMPLE = inline_serializer("RegisteredSample", {
    "sample": serializers.CharField(), "participant": serializers.CharField(), "kind": serializers.CharField(),
})


class EnrolmentView(APIView):
    @extend_schema(
        request=EnrolmentRequest,
        responses={201: OpenApiResponse(_ENROLMENT, description="Enrolled: this custodian's reference for the participant"),
                   200: OpenApiResponse(_ENROLMENT, description="Already enrolled: the same reference"),
                   400: OpenApiResponse(_ERROR, description="A malformed code"),
                   401: OpenApiResponse(_ERROR, description="Missing or unknown bearer token"),
                   404: OpenApiResponse(_ERROR, description="No such donation code, or it was used or has expired")},
        summary="Enrol a participant at collection with the one-time donation code they hand over",
    )
    def post(self, request):
        given = EnrolmentRequest(data=request.data)
        given.is_valid(raise_exception=True)
        try:
            enrolment, created = services.custodian_enrol(custodian=request.user, code=given.validated_data["code"])
        except services.EnrolmentError as exc:
            return Response({"error": "unknown_code", "detail": str(exc), "fields": {"code": [str(exc)]}},
                            status=status.HTTP_404_NOT_FOUND)
        return Response({"participant": enrolment.reference, "enrolled_at": enrolment.created_at},
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class SampleView(APIView):
    @extend_schema(request=SampleRequest, responses={
        201: OpenApiResponse(_SAMPLE, description="Registered"),
        400: OpenApiResponse(_ERROR, description="A missing or malformed field"),
        401: OpenApiResponse(_ERROR, description="Missing or unknown bearer token"),
        404: OpenApiResponse(_ERROR, description="No such participant enrolled with this custodian"),
        409: OpenApiResponse(_ERROR, description="This custodian already registered the sample")},
                   summary="Register a sample of a participant enrolled with this custodian")
    def post(self, request):
        given = SampleRequest(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        enrolment = selectors.enrolment_for_custodian(custodian=request.user, reference=data["participant"])
        if enrolment is None:
            # The same answer for a code that exists elsewhere and one that exists nowhere.
            detail = (f"No participant '{data['participant']}' is enrolled with this custodian: enrol them "
                      "with their donation code first (POST /api/v1/enrolments).")
            return Response({"error": "unknown_participant", "detail": detail,
                             "fields": {"participant": [detail]}}, status=status.HTTP_404_NOT_FOUND)
        try:
            sample = services.sample_register(
                custodian=request.user, identifier=data["sample"], participant=enrolment.participant,
                kind=data["kind"],
            )
        except IntegrityError:
            return Response(
                {"error": "duplicate_sample", "detail": f"Sample '{data['sample']}' is already registered.",
                 "fields": {"sample": ["already registered"]}},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(
            {"sample": sample.identifier, "participant": enrolment.reference, "kind": sample.kind},
            status=status.HTTP_201_CREATED,
        )


class BulkConsentCheckView(APIView):
    @extend_schema(
        request=BulkCheckRequest,
        responses={200: OpenApiResponse(description="A decision with evidence per sample, in request order.")},
        summary="Up to 10,000 samples of this custodian, one study, one purpose",
    )
    def post(self, request):
        question = BulkCheckRequest(data=request.data)
        question.is_valid(raise_exception=True)
        data = question.validated_data
        answer = services.consent_check_bulk(
            custodian=request.user, samples=data["samples"], study=data["study"], purpose=data["purpose"]
        )
        bulk, results_json = answer.pop("bulk"), answer.pop("results_json")
        ops.count_check("permit", kind="bulk", n=answer["permits"])
        ops.count_check("deny", kind="bulk", n=answer["count"] - answer["permits"])
        receipt = ledger_selectors.entry_receipt(entry_id=bulk.ledger_entry_id)
        answer["ledger"] = _with_openings(receipt, bulk.ledger_entry_id, BULK_OPENINGS) or {
            "sealed": False,
            "detail": "Recorded; the ledger entry carries results_sha256 and will be sealed shortly.",
        }
        # "results" is sent as the very bytes whose SHA-256 is results_sha256 (sorted keys,
        # no whitespace), so a custodian can hash what it received; and 10,000 results are
        # serialized once, not twice.
        head = JSONRenderer().render(answer)
        return HttpResponse(head[:-1] + b',"results":' + results_json + b"}", content_type="application/json")


def _instruction_body(instruction) -> dict:
    return {
        "id": instruction.seq,
        "sample": instruction.sample.identifier,
        "action": instruction.action,
        "level": instruction.withdrawal.level,
        "issued_at": instruction.created_at,
        # open, confirmed, or superseded (a later instruction for the same sample, destroy
        # after stop access, replaced it: carry out and confirm that one).
        "status": instruction.status,
        "superseded_by": instruction.superseded_by_id,
        "confirmed_at": instruction.confirmed_at,
        "confirmation_ledger_index": instruction.confirmation_entry.index if instruction.confirmation_entry else None,
        # What the instruction rests on, for a custodian about to destroy a sample: who signed
        # the withdrawal (the participant's own key or the portal on their behalf), the signed
        # decision itself (a JWT VP, checkable offline against the participant's DID), and
        # where the withdrawal sits on the ledger (null until sealed).
        "withdrawal": {
            "id": str(instruction.withdrawal.id),
            "signed_by": instruction.withdrawal.signed_by,
            "decision": instruction.withdrawal.decision_jwt or None,
            "ledger_index": instruction.withdrawal.ledger_entry.index,
        },
    }


class WithdrawalFeedView(APIView):
    @extend_schema(parameters=[WithdrawalFeedQuery], responses={200: OpenApiTypes.OBJECT},
                   summary="Withdrawal instructions for this custodian's samples")
    def get(self, request):
        query = WithdrawalFeedQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = list(selectors.withdrawal_feed(custodian=request.user, **query.validated_data))
        return Response({
            "instructions": [_instruction_body(i) for i in rows],
            "next": rows[-1].seq if rows else query.validated_data["since"],
        })


class WithdrawalConfirmView(APIView):
    @extend_schema(request=None, responses={
        200: OpenApiTypes.OBJECT, 404: OpenApiResponse(_ERROR, description="No such instruction for this custodian"),
        409: OpenApiResponse(_ERROR, description="already_confirmed, or superseded by a later instruction")},
                   summary="Confirm that an instruction was carried out (sealed on the ledger)")
    def post(self, request, seq):
        try:
            instruction = services.withdrawal_instruction_confirm(custodian=request.user, seq=seq)
        except WithdrawalInstruction.DoesNotExist as exc:
            raise NotFound(str(exc)) from None
        except services.InstructionClosedError as exc:
            return Response({"error": exc.code, "detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(_instruction_body(instruction))


class ConsentFhirView(APIView):
    @extend_schema(responses={(200, "application/fhir+json"): OpenApiTypes.OBJECT,
                              404: OpenApiResponse(_ERROR, description="Not a participant whose sample you hold")},
                   summary="A consent as a FHIR R4 Consent resource (for a participant whose sample you hold)")
    def get(self, request, credential_uuid):
        consent = selectors.consent_of_custodians_participant(
            credential_id=f"urn:uuid:{credential_uuid}", custodian=request.user
        )
        if consent is None:
            raise NotFound(f"No consent {credential_uuid} for a participant whose sample you hold.")
        # Named by this custodian's own reference, without the credential (it names the DID).
        patient = selectors.custodian_patient_identifier(custodian=request.user, participant=consent.participant)
        return Response(selectors.consent_fhir(consent=consent, credential=None, patient=patient),
                        content_type="application/fhir+json")


class StudyView(APIView):
    @extend_schema(request=StudyRequest, responses={201: OpenApiResponse(description="Submitted; uses pending")},
                   summary="Submit a study and the DUO uses it asks for, for the ethics committee")
    def post(self, request):
        given = StudyRequest(data=request.data)
        given.is_valid(raise_exception=True)
        study = services.study_submit(**given.validated_data)
        return Response(
            {"identifier": study.identifier,
             "uses": [{"permission": u.permission_id, "disease_id": u.disease_id, "status": u.status}
                      for u in study.uses.all()]},
            status=status.HTTP_201_CREATED,
        )


class MeView(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT}, summary="Which custodian this token belongs to")
    def get(self, request):
        return Response({"custodian": request.user.name})
