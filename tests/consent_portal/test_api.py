import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from consent_portal import services
from consent_portal.models import ConsentCheck
from ledger.keys import ledger_verifier_key
from ledger import blinding
from ledger.models import Entry
from ledger.selectors import entry_bytes
from tests.ledger import read

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(custodian_and_token):
    _, token = custodian_and_token
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.fixture
def sample(participant, custodian_and_token):
    custodian, _ = custodian_and_token
    return services.sample_register(custodian=custodian, identifier="S-1", participant=participant, kind="blood")


def check(api, **body):
    return api.post("/api/v1/consent-checks", data=json.dumps(body), content_type="application/json")


QUESTION = {"sample": "S-1", "study": "hmb-study", "purpose": "DUO:0000006"}


def test_permit_with_evidence_a_custodian_can_verify(
    api, sample, participant, purposes, approved_study, django_capture_on_commit_callbacks, tmp_path
):
    with django_capture_on_commit_callbacks(execute=True):
        services.consent_grant(participant=participant, purpose=purposes["general-research"])
    response = check(api, **QUESTION)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["decision"] == "permit"
    assert [r["code"] for r in body["reasons"]] == ["consent_active"]
    consent = body["evidence"]["consent"]
    # The credential's id, status and verification, not the credential: it names the DID.
    assert "credential" not in consent and consent["credential_id"].startswith("urn:uuid:")
    assert participant.did not in response.content.decode()
    assert consent["verification"]["verified"] is True
    assert consent["credential_status"] == {"revoked": False, "suspended": False}
    receipt = consent["latest_event"]["ledger"]
    for key in ("index", "tree_size", "inclusion_proof", "checkpoint", "leaf", "log_key"):
        assert key in receipt
    assert receipt["checkpoint"].startswith("localhost/consent-portal/ledger\n")
    leaf = json.loads(base64.b64decode(receipt["leaf"]))
    assert leaf["action"] == "grant" and "credential" not in leaf and "participant" not in leaf
    # The event commits to its credential, and the receipt opens that commitment alone.
    assert set(receipt["openings"]) == {"credential"}
    assert blinding.opening_check(leaf, "credential", receipt["openings"]["credential"]) == consent["credential_id"]
    # The receipt stands on its own: checked offline, with no database and no Django, against
    # the log key pinned (as a custodian would from the operator's trust file).
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "DATABASE", "REDIS", "CELERY"))}
    result = subprocess.run([sys.executable, "-m", "ledger.verify", "--log-key", ledger_verifier_key(),
                             str(path)], env=env, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_check_reads_its_facts_in_a_fixed_number_of_queries(
    api, sample, participant, purposes, approved_study, django_capture_on_commit_callbacks,
    django_assert_max_num_queries,
):
    with django_capture_on_commit_callbacks(execute=True):
        services.consent_grant(participant=participant, purpose=purposes["general-research"])
        services.consent_grant(participant=participant, purpose=purposes["health-medical-research"])
    assert check(api, **QUESTION).json()["decision"] == "permit"
    # Warm: the token, the sample, study, approval and every consent (1), the credential with
    # its status lists' state (1), the event's receipt remembered (1: are the witnesses the
    # same?), and the write: the ledger entry, its openings and the check in one transaction
    # (SQLite's test transaction makes that SAVEPOINT / INSERT x 3 / RELEASE; PostgreSQL one
    # statement), then, with in-process tasks only, the check's own receipt. The event's
    # opening comes with the facts, the check's from its write. Nothing grows with the
    # number of consents.
    with django_assert_max_num_queries(10):
        body = check(api, **QUESTION).json()
    assert body["decision"] == "permit" and body["evidence"]["consent"]["latest_event"]["ledger"]["index"] >= 0


def test_the_check_itself_is_recorded_on_the_ledger(api, sample, approved_study):
    before = len(read.of_kind("consent.check"))
    body = check(api, **QUESTION).json()
    assert len(read.of_kind("consent.check")) == before + 1
    stored = ConsentCheck.objects.get(pk=body["check"])
    payload = json.loads(entry_bytes(entry_id=stored.ledger_entry.id))
    assert payload["decision"] == "deny" and payload["reasons"] == ["no_consent"]


def test_a_check_body_is_exactly_what_its_declared_fields_give(
    api, sample, participant, purposes, approved_study, django_capture_on_commit_callbacks
):
    from rest_framework import serializers as drf

    from consent_portal.api.serializers import ConsentCheckResponse

    with django_capture_on_commit_callbacks(execute=True):
        services.consent_grant(participant=participant, purpose=purposes["general-research"])
    body = check(api, **QUESTION).json()
    stored = ConsentCheck.objects.get(pk=body["check"])
    assert body["decision"] == "permit" and body["evidence"]["consent"]
    context = {"check_ledger": lambda c: {"sealed": "as given"}}
    fast = ConsentCheckResponse(stored, context=context).data
    # The generic ModelSerializer walk over the same declared fields (what the OpenAPI
    # schema documents) must give the same answer, types included.
    generic = drf.ModelSerializer.to_representation(ConsentCheckResponse(stored, context=context), stored)
    assert json.dumps(list(fast.items())) == json.dumps(list(generic.items()))  # order too
    assert fast == {**body, "ledger": {"sealed": "as given"}}


def test_a_checks_ledger_entry_is_sealed_once_the_check_commits(
    api, sample, approved_study, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        body = check(api, **QUESTION).json()
    entry = ConsentCheck.objects.get(pk=body["check"]).ledger_entry
    assert entry.index is not None and entry.sealed_at  # the commit asked for the seal


def test_a_check_and_its_ledger_entry_are_written_in_one_statement_on_postgresql(api, sample, approved_study):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "postgresql":
        pytest.skip("data-modifying WITH is PostgreSQL's; SQLite writes the two rows in one transaction")
    with CaptureQueriesContext(connection) as captured:
        body = check(api, **QUESTION).json()
    writes = [q["sql"] for q in captured.captured_queries
              if q["sql"] and q["sql"].lstrip().upper().startswith(("INSERT", "WITH", "UPDATE", "SAVEPOINT"))]
    assert len(writes) == 1 and writes[0].startswith("WITH e AS (INSERT INTO")
    stored = ConsentCheck.objects.get(pk=body["check"])
    assert read.payload(stored.ledger_entry)["kind"] == "consent.check" and stored.ledger_entry.index is None
    # The same statement stored the entry's openings: the entry commits to this check.
    assert read.opened(stored.ledger_entry)["check"] == body["check"]


@pytest.fixture
def duo_terms():
    """The DUO terms migration 0002 loads: a transactional test runs after others whose
    flush emptied every table."""
    from consent_portal.duo import duo_terms_load
    from consent_portal.models import DuoTerm

    if not DuoTerm.objects.exists():
        duo_terms_load(DuoTerm)


@pytest.mark.django_db(transaction=True)
def test_a_check_that_cannot_be_stored_leaves_no_ledger_entry(duo_terms, sample, approved_study, custodian_and_token):
    """Autocommit, as a request runs: no enclosing transaction to roll the entry back."""
    from django.db import IntegrityError, connection
    from django.utils import timezone

    custodian, _ = custodian_and_token
    first = services.consent_check(custodian=custodian, **QUESTION).check
    entries = Entry.objects.count()
    again = ConsentCheck(id=first.id, custodian=custodian, sample_identifier="S-1", study_identifier="hmb-study",
                         purpose_id="DUO:0000006", decision="deny", reasons=[], evidence={}, created_at=timezone.now())
    assert connection.get_autocommit()
    with pytest.raises(IntegrityError):  # the same check id twice
        services._check_record(again, payload={"type": "consent.check"}, committed={"check": str(first.id)})
    assert Entry.objects.count() == entries


def test_suspended_then_revoked_consent_denies(api, sample, participant, purposes, approved_study):
    consent = services.consent_grant(participant=participant, purpose=purposes["health-medical-research"])
    services.consent_change(participant=participant, consent_id=consent.pk, action="suspend")
    body = check(api, **QUESTION).json()
    assert body["decision"] == "deny" and body["reasons"][0]["code"] == "consent_suspended"
    assert body["evidence"]["consent"]["credential_status"]["suspended"] is True
    services.consent_change(participant=participant, consent_id=consent.pk, action="revoke")
    body = check(api, **QUESTION).json()
    assert body["decision"] == "deny" and body["reasons"][0]["code"] == "consent_revoked"


def test_purpose_not_covered_denies(api, sample, participant, purposes, approved_study):
    services.consent_grant(participant=participant, purpose=purposes["diabetes-research"])
    body = check(api, **QUESTION).json()
    assert body["decision"] == "deny"
    assert body["reasons"][0]["code"] == "purpose_not_covered"


def test_study_not_approved_for_the_purpose_denies(api, sample, participant, purposes, approved_study):
    services.consent_grant(participant=participant, purpose=purposes["general-research"])
    body = check(api, **{**QUESTION, "purpose": "DUO:0000042"}).json()
    assert body["decision"] == "deny" and body["reasons"][0]["code"] == "study_not_approved"


def test_unknown_sample_is_a_404_deny_and_is_recorded(api, approved_study):
    response = check(api, **{**QUESTION, "sample": "nope"})
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "unknown_sample" and body["decision"] == "deny"
    assert ConsentCheck.objects.filter(pk=body["check"]).exists()


def test_another_custodians_sample_is_unknown_to_this_custodian(sample, approved_study, db):
    _, other_token = services.custodian_create(name="Other lab")
    other = Client(HTTP_AUTHORIZATION=f"Bearer {other_token}")
    response = check(other, **QUESTION)
    assert response.status_code == 404 and response.json()["error"] == "unknown_sample"


def test_unknown_study_is_a_404_deny(api, sample):
    response = check(api, **{**QUESTION, "study": "no-such-study"})
    assert response.status_code == 404 and response.json()["error"] == "unknown_study"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"study": "hmb-study", "purpose": "DUO:0000006"}, "sample"),
        ({"sample": "S-1", "purpose": "DUO:0000006"}, "study"),
        ({"sample": "S-1", "study": "hmb-study", "purpose": "HMB"}, "purpose"),
        ({"sample": "S-1", "study": "hmb-study", "purpose": "DUO:0009999"}, "purpose"),
        ({"sample": "S-1", "study": "hmb-study", "purpose": "DUO:0000046"}, "purpose"),  # a modifier
    ],
)
def test_bad_fields_are_400_naming_the_field(api, sample, body, field):
    before = ConsentCheck.objects.count()
    response = check(api, **body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert field in response.json()["fields"]
    assert ConsentCheck.objects.count() == before


def test_malformed_json_is_400(api):
    response = api.post("/api/v1/consent-checks", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == "parse_error"
    assert "JSON" in response.json()["detail"]


def test_oversized_body_is_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post(
        "/api/v1/consent-checks", data=json.dumps({"sample": "x" * 2000}), content_type="application/json"
    )
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Token abc", "Bearer"])
def test_missing_or_wrong_token_is_401(db, header):
    client = Client(HTTP_AUTHORIZATION=header) if header else Client()
    response = check(client, **QUESTION)
    assert response.status_code == 401
    assert response.json()["error"] in ("not_authenticated", "bad_token", "bad_authorization_header")


def test_a_custodian_reads_only_its_own_checks(api, sample, approved_study):
    check_id = check(api, **QUESTION).json()["check"]
    assert api.get(f"/api/v1/consent-checks/{check_id}").status_code == 200
    _, other_token = services.custodian_create(name="Other lab")
    other = Client(HTTP_AUTHORIZATION=f"Bearer {other_token}")
    assert other.get(f"/api/v1/consent-checks/{check_id}").status_code == 404


def test_custodian_registers_a_sample_of_a_participant_enrolled_with_it(api, participant):
    code = services.donation_code_create(participant=participant)
    enrolled = api.post("/api/v1/enrolments", data=json.dumps({"code": code}), content_type="application/json")
    assert enrolled.status_code == 201
    reference = enrolled.json()["participant"]
    assert reference.startswith("P-") and str(participant.pseudonym) not in enrolled.content.decode()
    body = {"sample": "S-9", "participant": reference, "kind": "saliva"}
    response = api.post("/api/v1/samples", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 201 and response.json()["participant"] == reference
    again = api.post("/api/v1/samples", data=json.dumps(body), content_type="application/json")
    assert again.status_code == 409 and again.json()["error"] == "duplicate_sample"
    unknown = api.post(
        "/api/v1/samples",
        data=json.dumps({**body, "sample": "S-10", "participant": "00000000-0000-0000-0000-000000000000"}),
        content_type="application/json",
    )
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_participant"
    assert "participant" in unknown.json()["fields"]


def test_openapi_schema_is_served(client, db):
    response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    assert "/api/v1/consent-checks" in paths and "/api/v1/ledger/checkpoint" in paths


def test_create_custodian_prints_a_token_that_works(db, capsys):
    from django.core.management import call_command

    call_command("create_custodian", "--name", "CLI lab")
    token = capsys.readouterr().out.strip().splitlines()[-1]
    response = check(Client(HTTP_AUTHORIZATION=f"Bearer {token}"), **QUESTION)
    assert response.status_code == 404  # authenticated; the sample is simply not theirs


def test_me_names_the_custodian_behind_the_token(api):
    assert api.get("/api/v1/me").json() == {"custodian": "Test biobank"}
    assert Client(HTTP_AUTHORIZATION="Bearer nope").get("/api/v1/me").status_code == 401


def test_permit_requires_the_credential_to_verify(api, sample, participant, purposes, approved_study):
    from identity.models import IssuedCredential

    consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    body = check(api, **QUESTION).json()
    assert body["decision"] == "permit"
    assert body["evidence"]["consent"]["verification"]["verified"] is True
    # A stored credential altered after issuance no longer verifies: fail closed.
    row = IssuedCredential.objects.get(pk=consent.credential_id)
    row.document = {**row.document, "credentialSubject": {**row.document["credentialSubject"], "purpose": "DUO:0000004"}}
    row.save()
    body = check(api, **QUESTION).json()
    assert body["decision"] == "deny"
    assert body["reasons"][0]["code"] == "credential_not_verified"
    assert "signature" in body["reasons"][0]["message"]


def test_a_retried_check_with_the_same_idempotency_key_gets_the_first_answer(api, sample, approved_study):
    first = api.post("/api/v1/consent-checks", data=json.dumps(QUESTION), content_type="application/json",
                     HTTP_IDEMPOTENCY_KEY="retry-7f3a")
    again = api.post("/api/v1/consent-checks", data=json.dumps(QUESTION), content_type="application/json",
                     HTTP_IDEMPOTENCY_KEY="retry-7f3a")
    assert first.status_code == again.status_code == 200
    assert again.json()["check"] == first.json()["check"] and again["Idempotent-Replayed"] == "true"
    assert ConsentCheck.objects.count() == 1 and len(read.of_kind("consent.check")) == 1
    # The same key for another question is refused, not answered with the first.
    other = api.post("/api/v1/consent-checks", data=json.dumps({**QUESTION, "sample": "S-2"}),
                     content_type="application/json", HTTP_IDEMPOTENCY_KEY="retry-7f3a")
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
    # An unknown sample's 404 is replayed as a 404; without a key every question is a check.
    unknown = {**QUESTION, "sample": "nope"}
    for _ in range(2):
        response = api.post("/api/v1/consent-checks", data=json.dumps(unknown), content_type="application/json",
                            HTTP_IDEMPOTENCY_KEY="k2")
        assert response.status_code == 404 and response.json()["error"] == "unknown_sample"
    check(api, **QUESTION)
    check(api, **QUESTION)
    assert ConsentCheck.objects.count() == 4
    bad = api.post("/api/v1/consent-checks", data=json.dumps(QUESTION), content_type="application/json",
                   HTTP_IDEMPOTENCY_KEY="x" * 129)
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["fields"]


def test_a_check_whose_ledger_row_was_moved_gets_no_other_records_receipt(api, sample, approved_study):
    from ledger import services as ledger_services
    from tests.ledger import tamper

    first = check(api, **QUESTION).json()
    second = check(api, **QUESTION).json()
    ledger_services.ledger_seal_pending()
    rows = [ConsentCheck.objects.get(pk=c["check"]).ledger_entry for c in (first, second)]
    for row in rows:
        row.refresh_from_db()
    tamper.rows_swap(rows[0].index, rows[1].index)
    response = api.get(f"/api/v1/consent-checks/{first['check']}")
    assert response.status_code == 500 and response.json()["error"] == "ledger_integrity"
    tamper.rows_swap(rows[1].index, rows[0].index)  # the repair
    assert api.get(f"/api/v1/consent-checks/{first['check']}").json()["ledger"]["index"] == rows[0].index
