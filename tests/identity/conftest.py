import pytest

from identity import selectors, services
from tests.identity.helpers import CONSENT_CLAIMS


@pytest.fixture(autouse=True)
def _fresh_verification_cache():
    # Verified status lists are cached by content hash; start every test cold.
    selectors._verified_lists.clear()
    yield
    selectors._verified_lists.clear()


@pytest.fixture
def subject(db):
    return services.did_create()


@pytest.fixture
def consent_credential(subject):
    return services.credential_issue(
        subject_did=subject.did, credential_type="ConsentCredential", claims=dict(CONSENT_CLAIMS)
    )
