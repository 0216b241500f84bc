"""Public documents verifiers fetch without authentication: status lists and our context."""

import hashlib
import json

from django.http import Http404, HttpResponse
from django.utils.cache import get_conditional_response
from django.views.decorators.http import require_safe

from identity import selectors, services, vocabulary
from identity.models import StatusList


def _public(response: HttpResponse, *, etag: str, max_age: int) -> HttpResponse:
    response["ETag"] = etag
    response["Cache-Control"] = f"public, max-age={max_age}"
    # Browser-based wallets and verifiers on other origins may read these documents.
    response["Access-Control-Allow-Origin"] = "*"
    return response


def _document(request, body: str, *, etag: str, content_type: str, max_age: int) -> HttpResponse:
    not_modified = get_conditional_response(request, etag=etag)
    if not_modified is not None:
        return _public(not_modified, etag=etag, max_age=max_age)
    return _public(HttpResponse(body, content_type=content_type), etag=etag, max_age=max_age)


@require_safe
def status_list(request, purpose: str) -> HttpResponse:
    """The signed StatusList2021Credential for "revocation" or "suspension"."""
    if purpose not in vocabulary.STATUS_PURPOSES:
        raise Http404("unknown status purpose")
    try:
        document, etag = selectors.status_list_document(purpose=purpose)
    except StatusList.DoesNotExist:
        # No credential has been issued yet: publish the empty list.
        services.status_list_sign(purpose=purpose)
        document, etag = selectors.status_list_document(purpose=purpose)
    # Lists are stored as json.dumps() output, so this is the exact text the ETag hashes.
    return _document(
        request, json.dumps(document), etag=etag, content_type="application/json", max_age=60
    )


@require_safe
def consent_context(request) -> HttpResponse:
    """Our JSON-LD context (the same document every credential embeds inline)."""
    body = json.dumps(vocabulary.context_document(), indent=2)
    etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:40] + '"'
    return _document(request, body, etag=etag, content_type="application/ld+json", max_age=3600)
