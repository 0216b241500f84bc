import io

from django.conf import settings
from rest_framework import exceptions, parsers


class BodyTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "body_too_large"


class LimitedJSONParser(parsers.JSONParser):
    """JSON parser that refuses bodies over DATA_UPLOAD_MAX_MEMORY_SIZE before reading them.

    DRF reads the raw stream, which bypasses Django's own body-size check.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = parser_context["request"]
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"The request body is {declared} bytes; the limit is {limit}.")
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise BodyTooLarge(f"The request body is over the limit of {limit} bytes.")
        return super().parse(io.BytesIO(body), media_type, parser_context)
