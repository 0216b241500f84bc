"""Status lists published under another SITE_URL: verification names that cause (and still
fails closed), and the identity.W001 system check warns about it."""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks as django_checks
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from consent_portal import services as portal_services
from identity import selectors, services
from identity.models import IssuedCredential, StatusList

ROOT = Path(__file__).resolve().parents[2]
# Not imported from identity.checks: these tests must see the check registered by the app.
W001 = "identity.W001"
OLD, NEW = "https://old.example", "https://new.example"
OLD_LIST = f"{OLD}/credentials/status/revocation"
FOREIGN_CREDENTIAL = (
    f"the credential's status list {OLD_LIST} is not published by this portal"
    f" (SITE_URL is {NEW}); was SITE_URL changed after it was issued?"
)


@pytest.fixture
def issued_under_old(settings, subject):
    """A credential (and both lists) issued under OLD, then SITE_URL changed to NEW."""
    settings.SITE_URL = OLD
    credential = services.credential_issue(
        subject_did=subject.did, credential_type="EnrolmentCredential", claims={}
    )
    assert selectors.credential_verify(document=credential.document)["verified"] is True
    settings.SITE_URL = NEW
    return credential


def test_a_credential_issued_under_another_site_url_names_the_cause(issued_under_old):
    result = selectors.credential_verify(document=issued_under_old.document)
    assert result["verified"] is False  # fail closed
    assert result["checks"]["signature"] == "ok" and result["checks"]["status"] == "unknown"
    assert result["errors"] == [f"status: {FOREIGN_CREDENTIAL}"]
    assert selectors.verification_failure(result) == f"status: {FOREIGN_CREDENTIAL}"
    assert f"({NEW})" in selectors.verification_site_url_mismatch(result)
    # The stored credential, as custodian checks read it: the same cause.
    evidence = selectors.credential_evidence(credential_id=issued_under_old.id)
    assert evidence["verification"]["verified"] is False
    assert evidence["verification"]["errors"] == [f"status: {FOREIGN_CREDENTIAL}"]


def test_setting_site_url_back_makes_it_verify_again(issued_under_old, settings):
    assert selectors.credential_verify(document=issued_under_old.document)["verified"] is False
    settings.SITE_URL = OLD
    assert selectors.credential_verify(document=issued_under_old.document)["verified"] is True


def test_a_credential_issued_after_the_change_names_the_old_lists(issued_under_old, subject, settings):
    # Issued under NEW, while the stored lists are still signed under OLD.
    newer = services.credential_issue(subject_did=subject.did, credential_type="EnrolmentCredential", claims={})
    assert newer.document["credentialStatus"]["statusListCredential"] == f"{NEW}/credentials/status/revocation"
    result = selectors.credential_verify(document=newer.document)
    assert result["verified"] is False and result["checks"]["status"] == "unknown"
    assert result["errors"] == [
        f"status: this portal's revocation status list is signed as {OLD_LIST}, which is not"
        f" published by this portal (SITE_URL is {NEW}); was SITE_URL changed after it was signed?"
    ]
    assert selectors.verification_site_url_mismatch(result) is not None
    # Re-signed under NEW, the lists serve the newer credential; the older one still fails.
    for purpose in ("revocation", "suspension"):
        services.status_list_sign(purpose=purpose)
    assert selectors.credential_verify(document=newer.document)["verified"] is True
    older = selectors.credential_verify(document=issued_under_old.document)
    assert older["verified"] is False and older["errors"] == [f"status: {FOREIGN_CREDENTIAL}"]


def test_a_status_list_elsewhere_is_not_blamed_on_site_url(consent_credential):
    from tests.identity.helpers import resign

    for url in ("https://elsewhere.invalid/list", "https://x.example/credentials/status/suspension",
                "ftp://old.example/credentials/status/revocation", "/credentials/status/revocation"):
        entry = {**consent_credential.document["credentialStatus"], "statusListCredential": url}
        result = selectors.credential_verify(document=resign(consent_credential.document, credentialStatus=entry))
        assert result["verified"] is False and result["checks"]["status"] == "unknown"
        assert any(e.startswith("status: credentialStatus is not an entry in") for e in result["errors"]), url
        assert selectors.verification_site_url_mismatch(result) is None


def test_verification_failure_is_a_sentence_for_every_kind_of_failure(consent_credential):
    revoked = dict(consent_credential.document)
    services.credential_revoke(credential_id=consent_credential.id)
    assert selectors.verification_failure(selectors.credential_verify(document=revoked)) == (
        "status: the credential is revoked."
    )
    tampered = json.loads(json.dumps(consent_credential.document))
    tampered["credentialSubject"]["purpose"] = "DUO:0000006"
    text = selectors.verification_failure(selectors.credential_verify(document=tampered))
    assert text.startswith("signature: ") and "status: the credential is revoked." in text
    # What consent_portal stores for a credential that is not on record.
    assert selectors.verification_failure({
        "verified": False, "checks": {"credential": "failed: not found"},
        "errors": ["credential urn:uuid:x is not on record"],
    }) == "credential urn:uuid:x is not on record."
    # No errors named: the failing checks, in words; nothing at all: still a sentence.
    assert selectors.verification_failure(
        {"verified": False, "checks": {"signature": "failed: bad proof", "issuer_trusted": "ok", "status": "suspended"}}
    ) == "signature: bad proof; status: the credential is suspended."
    assert selectors.verification_failure({"verified": False}) == "no check verified it."


def test_the_verify_api_reports_the_same_cause(issued_under_old):
    _, token = portal_services.custodian_create(name="Verifier biobank")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = api.post("/api/v1/credentials/verify", data=json.dumps({"verifiable": issued_under_old.document}),
                        content_type="application/json")
    assert response.status_code == 200
    body = response.json()
    assert body["verified"] is False and body["checks"]["status"] == "unknown"
    assert body["errors"] == [f"status: {FOREIGN_CREDENTIAL}"]


# identity.W001 -----------------------------------------------------------------------------


def w001(databases=("default",)):
    found = django_checks.run_checks(tags=[django_checks.Tags.database], databases=list(databases))
    return [message for message in found if message.id == W001]


def test_w001_is_silent_on_a_fresh_database_and_under_the_same_site_url(db, settings, subject):
    assert w001() == []
    services.credential_issue(subject_did=subject.did, credential_type="EnrolmentCredential", claims={})
    assert w001() == []
    # A plain `check` names no database: the check reads none.
    assert [m for m in django_checks.run_checks(tags=[django_checks.Tags.database]) if m.id == W001] == []


def test_w001_names_both_urls_and_what_to_do(issued_under_old):
    with CaptureQueriesContext(connection) as queries:
        (warning,) = w001()
    # Cheap: two small reads (inside a test's transaction, between a savepoint and its release).
    reads = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(reads) == 2, reads
    assert warning.level == django_checks.WARNING
    assert warning.msg.startswith(
        f"The revocation status list, the suspension status list and issued credentials in the"
        f" database were published under {OLD}, but SITE_URL is {NEW}."
    )
    assert f"set SITE_URL={OLD} again" in warning.hint and "re-issue" in warning.hint


def test_w001_sees_credentials_under_the_old_url_after_the_lists_were_re_signed(issued_under_old):
    for purpose in ("revocation", "suspension"):
        services.status_list_sign(purpose=purpose)
    (warning,) = w001()
    assert warning.msg.startswith(f"Issued credentials in the database were published under {OLD}, but SITE_URL is {NEW}.")


def test_w001_does_not_fail_when_the_tables_are_missing(issued_under_old):
    with connection.cursor() as cursor:  # rolled back with the test's transaction
        cursor.execute(f"ALTER TABLE {StatusList._meta.db_table} RENAME TO gone_statuslist")
        cursor.execute(f"ALTER TABLE {IssuedCredential._meta.db_table} RENAME TO gone_issuedcredential")
    assert w001() == []
    # ... and leaves the transaction usable.
    assert selectors.trusted_issuer_dids()


# The check at start-up, in processes of their own on a database file of their own.

PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "x" * 30 + "-production-secret-for-the-check-only-0123456789",
    "KEY_ENCRYPTION_KEY": base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("="),
    "ALLOWED_HOSTS": "consent.example.org",
}


def manage(var_dir: Path, site_url: str, *args):
    clean = {k: v for k, v in os.environ.items()
             if k not in PRODUCTION and k not in ("DATABASE_URL", "REDIS_URL", "SITE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**clean, **PRODUCTION, "VAR_DIR": str(var_dir), "SITE_URL": site_url},
    )


def test_migrate_and_check_warn_at_start_up_and_a_fresh_database_passes(tmp_path):
    old, new = "https://old.example.org", "https://consent.example.org"
    # Before the first migrate (no tables) and on a fresh database: nothing to warn about.
    (tmp_path / "db.sqlite3").touch()
    result = manage(tmp_path, old, "check", "--deploy", "--database", "default", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    result = manage(tmp_path, old, "migrate", "--noinput")
    assert result.returncode == 0 and W001 not in result.stdout + result.stderr, result.stdout + result.stderr
    result = manage(tmp_path, old, "check", "--deploy", "--database", "default", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    result = manage(tmp_path, old, "shell", "-c", (
        "from identity import services; s = services.did_create();"
        " services.credential_issue(subject_did=s.did, credential_type='EnrolmentCredential', claims={})"))
    assert result.returncode == 0, result.stdout + result.stderr
    # Served under another SITE_URL: migrate (the start-up step) warns, the check fails.
    result = manage(tmp_path, new, "migrate", "--noinput")
    assert result.returncode == 0
    assert W001 in result.stderr and f"published under {old}, but SITE_URL is {new}" in result.stderr
    result = manage(tmp_path, new, "check", "--deploy", "--database", "default", "--fail-level", "WARNING")
    assert result.returncode != 0 and W001 in result.stderr, result.stdout + result.stderr
    # A check that names no database does not read it (tests/test_settings.py runs that one).
    result = manage(tmp_path, new, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
