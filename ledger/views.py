"""Read-only ledger API: tree head, checkpoint, leaves and proofs (hashes in base64), and the
log as C2SP tlog-tiles (hash tiles and entry bundles, binary)."""

import base64

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from ledger import selectors, services, tiles
from ledger.auth import MemberTokenAuthentication
from ledger.permissions import LedgerEntryReadPermission, LedgerReadPermission


# Indexes and sizes past a bigint are no index of this log (and were a database error).
MAX_INDEX = 2**63 - 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _JSONErrors(BaseContentNegotiation):
    """Errors are JSON whatever the Accept header says, instead of a 406."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def _authentication_classes():
    # Member tokens first: the custodian class refuses any bearer token it does not know.
    others = [c for c in api_settings.DEFAULT_AUTHENTICATION_CLASSES if c is not MemberTokenAuthentication]
    return [MemberTokenAuthentication, *others]


class LedgerView(APIView):
    permission_classes = [LedgerReadPermission]
    authentication_classes = _authentication_classes()
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _JSONErrors


class InclusionQuery(serializers.Serializer):
    index = serializers.IntegerField(min_value=0, max_value=MAX_INDEX)
    tree_size = serializers.IntegerField(min_value=1, max_value=MAX_INDEX)

    def validate(self, data):
        if data["index"] >= data["tree_size"]:
            raise ValidationError({"index": "Must be less than tree_size."})
        return data


class ConsistencyQuery(serializers.Serializer):
    first = serializers.IntegerField(min_value=1, max_value=MAX_INDEX)
    second = serializers.IntegerField(min_value=1, max_value=MAX_INDEX)

    def validate(self, data):
        if data["first"] > data["second"]:
            raise ValidationError({"first": "Must not be greater than second."})
        return data


def _query(serializer_class, request) -> dict:
    query = serializer_class(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query.validated_data


def _within_tree(field: str, size: int) -> None:
    current = selectors.tree_size()
    if size > current:
        raise ValidationError({field: f"Is beyond the ledger, which has {current} entries."})


_ERRORS = {
    400: OpenApiResponse(
        description="A parameter is missing, malformed or out of range: {error, detail, fields}."
    ),
    401: OpenApiResponse(description="No credentials, when the ledger is not public."),
    404: OpenApiResponse(description="Not found: {error, detail}."),
}
# The entries themselves: member nodes only, unless the log is public.
_ENTRY_ERRORS = {**_ERRORS, 403: OpenApiResponse(description="A custodian token: entries are for member nodes.")}
_HASHES = serializers.ListField(child=serializers.CharField(), help_text="Base64 SHA-256 hashes.")


class InfoView(LedgerView):
    @extend_schema(
        tags=["ledger"],
        operation_id="ledger_info",
        summary="Ledger tree head",
        responses={
            200: inline_serializer(
                "LedgerInfo",
                {
                    "origin": serializers.CharField(),
                    "size": serializers.IntegerField(),
                    "root_hash": serializers.CharField(help_text="Base64 SHA-256 root."),
                    "verifier_key": serializers.CharField(
                        help_text="C2SP signed-note verifier key."
                    ),
                    "last_sealed_at": serializers.DateTimeField(allow_null=True),
                    "pending": serializers.IntegerField(),
                },
            ),
            401: _ERRORS[401],
        },
    )
    def get(self, request):
        return Response(selectors.ledger_info())


class CheckpointView(LedgerView):
    @extend_schema(
        tags=["ledger"],
        operation_id="ledger_checkpoint",
        summary="Latest signed checkpoint (C2SP tlog-checkpoint signed note)",
        responses={(200, "text/plain"): OpenApiTypes.STR, 401: _ERRORS[401], 404: _ERRORS[404]},
    )
    def get(self, request):
        checkpoint = selectors.checkpoint_latest()
        if checkpoint is None:
            raise NotFound("Nothing has been sealed yet, so there is no checkpoint.")
        return HttpResponse(checkpoint.note, content_type="text/plain; charset=utf-8")



def _tile_address(path: str, width: str | None) -> tuple[int, int]:
    """(tile index, width) from a C2SP tlog-tiles path; 400 for one the spec would not
    write."""
    try:
        index = tiles.tile_index(path)
    except ValueError:
        raise ValidationError({"tile": f"{path!r} is not a tile index as C2SP tlog-tiles "
                               "writes it (3-digit groups, all but the last prefixed with x)."}) from None
    if width is None:
        return index, tiles.WIDTH
    # The route admits only digits; the spec writes no leading zero.
    if width.startswith("0") or not int(width) < tiles.WIDTH:
        raise ValidationError({"width": f"A partial tile is 1 to {tiles.WIDTH - 1} wide."})
    return index, int(width)


def _immutable(data: bytes) -> HttpResponse:
    # A tile or bundle of a given width never changes once the log holds it.
    response = HttpResponse(data, content_type="application/octet-stream")
    scope = "public" if getattr(settings, "LEDGER_PUBLIC", False) else "private"
    response["Cache-Control"] = f"{scope}, max-age=31536000, immutable"
    return response


_TILE_RESPONSES = {(200, "application/octet-stream"): OpenApiTypes.BINARY, **_ERRORS}
_ENTRY_BUNDLE_RESPONSES = {(200, "application/octet-stream"): OpenApiTypes.BINARY, **_ENTRY_ERRORS}


class HashTileView(LedgerView):
    @extend_schema(
        tags=["ledger"],
        operation_id="ledger_tile",
        summary="A hash tile (C2SP tlog-tiles): tile/<L>/<N>, or a partial one, .p/<W>",
        responses=_TILE_RESPONSES,
    )
    def get(self, request, level: str, path: str, width: str | None = None):
        if int(level) > 63:
            raise ValidationError({"level": "A tile level is 0 to 63."})
        index, width = _tile_address(path, width)
        data = selectors.tile(level=int(level), index=index, width=width)
        if data is None:
            raise NotFound(f"The log holds no tile {level}/{path} {width} hashes wide.")
        return _immutable(data)


class EntryBundleView(LedgerView):
    permission_classes = [LedgerEntryReadPermission]

    @extend_schema(
        tags=["ledger"],
        operation_id="ledger_entry_bundle",
        summary="An entry bundle (C2SP tlog-tiles): tile/entries/<N>, or a partial one, .p/<W>",
        responses=_ENTRY_BUNDLE_RESPONSES,
    )
    def get(self, request, path: str, width: str | None = None):
        index, width = _tile_address(path, width)
        data = selectors.entry_bundle(index=index, width=width)
        if data is None:
            raise NotFound(f"The log holds no entry bundle {path} {width} entries wide.")
        return _immutable(data)


class EntryView(LedgerView):
    permission_classes = [LedgerEntryReadPermission]

    @extend_schema(
        tags=["ledger"],
        operation_id="ledger_entry",
        summary="The bytes of a sealed leaf, exactly as hashed",
        responses={
            (200, "application/json"): OpenApiTypes.OBJECT,
            401: _ERRORS[401],
            404: _ERRORS[404],
            403: _ENTRY_ERRORS[403],
        },
    )
    def get(self, request, index: int):
        payload = selectors.entry_payload(index=index)
        if payload is None:
            raise NotFound(f"No sealed entry has index {index}.")
        return HttpResponse(payload, content_type="application/json")


class InclusionProofView(LedgerView):
    @extend_schema(
        tags=["ledger"],
        operation_id="ledger_proof_inclusion",
        summary="Inclusion proof (RFC 9162 §2.1.3)",
        parameters=[
            OpenApiParameter("index", int, required=True, description="Leaf index, from 0."),
            OpenApiParameter(
                "tree_size", int, required=True, description="Tree size, at most the ledger's."
            ),
        ],
        responses={
            200: inline_serializer(
                "InclusionProof",
                {
                    "index": serializers.IntegerField(),
                    "tree_size": serializers.IntegerField(),
                    "leaf_hash": serializers.CharField(),
                    "hashes": _HASHES,
                },
            ),
            **_ERRORS,
        },
    )
    def get(self, request):
        query = _query(InclusionQuery, request)
        _within_tree("tree_size", query["tree_size"])
        leaf, proof = selectors.leaf_inclusion(**query)
        return Response({**query, "leaf_hash": _b64(leaf), "hashes": [_b64(h) for h in proof]})


class ConsistencyProofView(LedgerView):
    @extend_schema(
        tags=["ledger"],
        operation_id="ledger_proof_consistency",
        summary="Consistency proof (RFC 9162 §2.1.4)",
        parameters=[
            OpenApiParameter("first", int, required=True, description="Earlier tree size, from 1."),
            OpenApiParameter(
                "second", int, required=True, description="Later tree size, at most the ledger's."
            ),
        ],
        responses={
            200: inline_serializer(
                "ConsistencyProof",
                {
                    "first": serializers.IntegerField(),
                    "second": serializers.IntegerField(),
                    "hashes": _HASHES,
                },
            ),
            **_ERRORS,
        },
    )
    def get(self, request):
        query = _query(ConsistencyQuery, request)
        _within_tree("second", query["second"])
        proof = selectors.proof_consistency(**query)
        return Response({**query, "hashes": [_b64(h) for h in proof]})


class EntriesQuery(serializers.Serializer):
    start = serializers.IntegerField(min_value=0, max_value=MAX_INDEX)
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=1000)


class EntriesView(LedgerView):
    permission_classes = [LedgerEntryReadPermission]

    @extend_schema(
        tags=["ledger"],
        operation_id="ledger_entries",
        summary="A run of sealed leaves from start, for auditors (base64 leaf bytes)",
        parameters=[
            OpenApiParameter("start", int, required=True, description="First index."),
            OpenApiParameter("limit", int, description="At most 1000."),
        ],
        responses={
            200: inline_serializer(
                "LedgerEntries",
                {"start": serializers.IntegerField(), "leaves": _HASHES},
            ),
            **_ENTRY_ERRORS,
        },
    )
    def get(self, request):
        query = _query(EntriesQuery, request)
        _within_tree("start", query["start"] + 1)
        leaves = selectors.entry_payloads(start=query["start"], limit=query["limit"])
        return Response({"start": query["start"], "leaves": [_b64(p) for p in leaves]})


class WitnessesView(LedgerView):
    @extend_schema(
        tags=["ledger"],
        operation_id="ledger_witnesses",
        summary="Registered witnesses, quorum, the latest final size and witness refusals",
        responses={200: OpenApiTypes.OBJECT, 401: _ERRORS[401]},
    )
    def get(self, request):
        return Response(selectors.witness_overview())


class CosignedCheckpointView(LedgerView):
    @extend_schema(
        tags=["ledger"],
        operation_id="ledger_checkpoint_cosigned",
        summary="Latest final checkpoint with its witness cosignatures (C2SP tlog-cosignature)",
        responses={(200, "text/plain"): OpenApiTypes.STR, 401: _ERRORS[401], 404: _ERRORS[404]},
    )
    def get(self, request):
        checkpoint = selectors.checkpoint_final_latest()
        if checkpoint is None:
            raise NotFound("No checkpoint has the quorum of witness cosignatures yet.")
        note_text = selectors.checkpoint_cosigned_note(checkpoint=checkpoint)
        return HttpResponse(note_text, content_type="text/plain; charset=utf-8")


class CosignatureSubmission(serializers.Serializer):
    size = serializers.IntegerField(min_value=1, max_value=MAX_INDEX)
    cosignature = serializers.CharField(max_length=1000, trim_whitespace=False)


class CosignatureView(LedgerView):
    # The signature is the credential: only registered witness keys are accepted.
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=["ledger"],
        operation_id="ledger_cosignature_add",
        summary="A witness submits its cosignature line on one of our checkpoints",
        request=CosignatureSubmission,
        responses={
            201: inline_serializer(
                "CosignatureStored", {"size": serializers.IntegerField(), "witness": serializers.CharField()}
            ),
            400: _ERRORS[400],
            403: OpenApiResponse(description="Not a registered witness key, or does not verify."),
            404: _ERRORS[404],
        },
    )
    def post(self, request):
        data = CosignatureSubmission(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            row = services.checkpoint_cosignature_add(
                size=data.validated_data["size"], line=data.validated_data["cosignature"]
            )
        except services.CosignatureError as exc:
            if exc.status == 404:
                raise NotFound(str(exc)) from None
            if exc.status == 403:
                raise PermissionDenied(str(exc)) from None
            raise ValidationError({"cosignature": str(exc)}) from None
        return Response({"size": row.checkpoint.size, "witness": row.member.name}, status=201)
