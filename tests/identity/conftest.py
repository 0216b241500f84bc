import pytest

from identity import jsonld, selectors, services
from tests.identity.helpers import CONSENT_CLAIMS


@pytest.fixture(autouse=True)
def _fresh_verification_cache():
    # Verified status lists (by ETag), list bits (by ETag) and JSON-LD shapes already
    # checked are cached per process; start every test cold.
    for cache in (selectors._verified_lists, services._list_bits, jsonld._checked_shapes):
        cache.clear()
    yield
    for cache in (selectors._verified_lists, services._list_bits, jsonld._checked_shapes):
        cache.clear()


@pytest.fixture
def subject(db):
    return services.did_create()


@pytest.fixture
def consent_credential(subject):
    return services.credential_issue(
        subject_did=subject.did, credential_type="ConsentCredential", claims=dict(CONSENT_CLAIMS)
    )
