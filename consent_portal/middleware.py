"""Request and response handling every page and endpoint shares.

- ChunkedBodyMiddleware: a body sent with Transfer-Encoding: chunked (no Content-Length)
  was read as empty ("field is required"); gunicorn de-chunks it and says so
  (wsgi.input_terminated), so it is read here, up to the upload limit.
- PrivatePagesMiddleware: personal pages and API answers are never stored by a browser
  or a proxy (Cache-Control: no-store), unless a view set its own caching (public status
  lists and contexts do).
"""

from io import BytesIO

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers

from consent_portal.errors import wants_json

_PRIVATE_PREFIXES = ("/portal/", "/ethics/", "/admin/", "/api/", "/login/", "/signup/", "/logout/")


class ChunkedBodyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        meta = request.META
        if "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower() and not meta.get("CONTENT_LENGTH"):
            if not meta.get("wsgi.input_terminated"):
                # This server hands the raw chunked stream on: it cannot be read safely.
                return _refuse(request, 411, "length_required",
                               "Send the body with a Content-Length header (this server does not de-chunk).")
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            try:
                body = meta["wsgi.input"].read(-1 if limit is None else limit + 1)
            except Exception:  # gunicorn: InvalidChunkSize, ChunkMissingTerminator, NoMoreData
                return _refuse(request, 400, "bad_request", "The chunked body is malformed or cut short.")
            if limit is not None and len(body) > limit:
                return _refuse(request, 413, "body_too_large", "The request body is over the size limit.")
            meta["CONTENT_LENGTH"] = str(len(body))
            request._stream = LimitedStream(BytesIO(body), len(body))
        return self.get_response(request)


def _refuse(request, status: int, error: str, detail: str) -> HttpResponse:
    if wants_json(request):
        return JsonResponse({"error": error, "detail": detail}, status=status)
    return HttpResponse(detail, status=status, content_type="text/plain; charset=utf-8")


class PrivatePagesMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Cache-Control" in response:
            return response
        user = getattr(request, "user", None)
        if request.path.startswith(_PRIVATE_PREFIXES) or (user is not None and user.is_authenticated):
            add_never_cache_headers(response)
        return response
