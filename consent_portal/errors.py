"""Error answers: JSON in the API's shape for /api/ and the ledger, pages of the portal's own
design for people, and 503 with Retry-After when the database is unreachable.

Django's defaults answered an unknown API path with an HTML 404 (or, with DEBUG on, a page
listing every URL pattern) and a database outage with an HTML 500; a client cannot act on
either. 500 stays for bugs.
"""

import logging
import sys

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.template import loader
from django.utils.translation import gettext as _

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 30
# Paths whose callers are programs: they get JSON.
_API_PREFIXES = ("/api/", "/credentials/")


def wants_json(request) -> bool:
    return request.path.startswith(_API_PREFIXES) or "application/json" in request.headers.get("Accept", "")


def _json(status: int, error: str, detail: str, **headers) -> JsonResponse:
    response = JsonResponse({"error": error, "detail": detail}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _page(request, template: str, status: int, context: dict | None = None) -> HttpResponse:
    return HttpResponse(loader.render_to_string(template, context or {}, request), status=status)


def _standalone(template: str, status: int, **headers) -> HttpResponse:
    """A page that needs neither the database nor a request context (500, 503)."""
    response = HttpResponse(loader.get_template(template).render({}), status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def api_not_found(request, rest=""):
    """The catch-all after every API route: a JSON 404 even with DEBUG on, where Django
    would show its technical page."""
    return page_not_found(request)


def page_not_found(request, exception=None):
    if wants_json(request):
        return _json(404, "not_found", f"No such endpoint: {request.method} {request.path}.")
    return _page(request, "errors/404.html", 404)


def permission_denied(request, exception=None):
    if wants_json(request):
        return _json(403, "permission_denied", str(exception) if exception and str(exception) else
                     "You may not do this.")
    return _page(request, "errors/403.html", 403, {"reason": str(exception) if exception else ""})


def bad_request(request, exception=None):
    if wants_json(request):
        return _json(400, "bad_request", "The request could not be understood.")
    return _page(request, "errors/400.html", 400)


def server_error(request):
    # Django calls this inside its except block: a database outage outside a view (a
    # middleware reading the session, say) is a 503 too.
    exc = sys.exc_info()[1]
    if isinstance(exc, (OperationalError, InterfaceError)) and _unreachable(exc):
        return database_unavailable(request)
    if wants_json(request):
        return _json(500, "server_error", "Something went wrong on our side; it has been logged.")
    return _standalone("errors/500.html", 500)


def database_unavailable(request) -> HttpResponse:
    if wants_json(request):
        return _json(503, "unavailable", _("The service is briefly unavailable (its database cannot be "
                                            "reached); retry after %(s)d seconds.") % {"s": RETRY_AFTER_SECONDS},
                     Retry_After=str(RETRY_AFTER_SECONDS))
    return _standalone("errors/503.html", 503, Retry_After=str(RETRY_AFTER_SECONDS))


class DatabaseUnavailableMiddleware:
    """A request that finds the database unreachable (connection refused, server gone,
    too many clients) answers 503 with Retry-After, in JSON for programs, instead of a 500:
    nothing was written, and the client may safely retry."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, (OperationalError, InterfaceError)) and _unreachable(exception):
            logger.error("database unreachable: %s", exception)
            return database_unavailable(request)
        return None


def _unreachable(exc: DatabaseError) -> bool:
    """Connection failures, not query errors that merely share OperationalError (SQLite's
    'no such table', a lock timeout): those are bugs or load, and stay 500s."""
    if isinstance(exc, InterfaceError):
        return True
    text = str(exc).lower()
    return any(sign in text for sign in (
        "connection", "could not connect", "server closed", "terminating", "the database system is",
        "too many clients", "unable to open database file", "timeout expired"))
