"""One JSON error shape for every 4xx the API returns.

    {"error": "<code>", "detail": "<a sentence naming the problem>", "fields": {...}}

`fields` appears when particular input fields were wrong, keyed by field name.
"""

import logging

from django.core.exceptions import RequestDataTooBig
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ledger.selectors import EntryRowMismatch

logger = logging.getLogger(__name__)


class BodyTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is over the size limit."
    default_code = "body_too_large"


def _first_message(detail) -> str:
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        return f"{key}: {_first_message(value)}"
    return str(detail)


def exception_handler(exc, context):
    if isinstance(exc, EntryRowMismatch):
        # The ledger's rows disagree with its leaves (tampering or a bad repair): no receipt
        # is served for another record. An incident for the operator, said as such.
        logger.error("ledger integrity: %s", exc)
        return Response({"error": "ledger_integrity", "detail": "This answer's ledger record does not match the "
                         "ledger; the operator has been alerted (run verify_ledger)."}, status=500)
    if isinstance(exc, RequestDataTooBig):
        # Django refuses the body before DRF parses it; say so as JSON, not as a 400 page.
        exc = BodyTooLarge()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    body = {"error": getattr(exc, "default_code", "error"), "detail": ""}
    if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict):
        body["error"] = "invalid"
        body["fields"] = exc.detail
        body["detail"] = _first_message(exc.detail)
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        if isinstance(codes, str):
            body["error"] = codes
        body["detail"] = _first_message(exc.detail)
        if getattr(exc, "field", None):
            # A body refused at the edge (api/parsers.py) for what one field holds.
            body["error"], body["fields"] = "invalid", {exc.field: [body["detail"]]}
    response.data = body
    return response
