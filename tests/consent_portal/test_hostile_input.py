"""Hostile input from the robustness issue: each answered with a 4xx that names the problem,
in the API's JSON shape, nothing written; never a 500."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.db import OperationalError
from django.test import Client, RequestFactory

from consent_portal import errors, services
from consent_portal.models import Sample, Study, StudyUse
from ledger.models import Entry

JSON_ENDPOINTS = [
    "/api/v1/consent-checks",
    "/api/v1/consent-checks/bulk",
    "/api/v1/samples",
    "/api/v1/enrolments",
    "/api/v1/studies",
    "/api/v1/credentials/verify",
]


def post(client, url, body: str | bytes):
    return client.post(url, data=body, content_type="application/json")


def assert_error(response, status: int, *, names: str = ""):
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert body["error"] and body["detail"], body
    if names:
        assert names in body["detail"], body["detail"]
    return body


@pytest.fixture
def api(custodian_and_token):
    return Client(HTTP_AUTHORIZATION=f"Bearer {custodian_and_token[1]}")


@pytest.mark.parametrize("url", JSON_ENDPOINTS)
def test_json_nested_1000_deep_is_refused_on_every_endpoint_token_or_not(api, url):
    deep = "[" * 1000 + "]" * 1000
    assert_error(post(api, url, deep), 400, names="deep")
    assert_error(post(api, url, '{"a":' * 100 + "1" + "}" * 100), 400, names="deep")
    assert post(Client(), url, deep).status_code == 401
    assert not Entry.objects.exists()


@pytest.mark.parametrize("text, problem", [("S\u0000-1", "NUL byte"), ("S-\ud800", "lone surrogate")])
def test_nul_bytes_and_lone_surrogates_are_refused_at_the_edge(api, approved_study, text, problem):
    escaped = json.dumps(text)  # \u0000 and \ud800 as JSON escapes, as a client sends them
    for body in (f'{{"sample": {escaped}, "study": "hmb-study", "purpose": "DUO:0000006"}}',
                 f'{{"sample": "S-1", "participant": "P-1", "kind": {escaped}}}',
                 f'{{{escaped}: 1}}'):
        for url in ("/api/v1/consent-checks", "/api/v1/samples"):
            assert_error(post(api, url, body), 400, names=problem)
    verify = f'{{"verifiable": {{"@context": [], "type": [{escaped}]}}}}'
    assert_error(post(api, "/api/v1/credentials/verify", verify), 400, names=problem)
    assert not Sample.objects.exists() and not Entry.objects.exists()


def test_nan_and_malformed_json_are_refused(api):
    assert_error(post(api, "/api/v1/consent-checks", '{"sample": NaN}'), 400, names="NaN is not a JSON number")
    assert_error(post(api, "/api/v1/consent-checks", '{"sample": '), 400, names="not JSON")
    assert_error(post(api, "/api/v1/consent-checks", b"\xff\xfe"), 400, names="not utf-8 text")


def test_a_padded_credential_is_refused_before_it_costs_anything(api):
    padded = {"verifiable": {"@context": ["https://www.w3.org/2018/credentials/v1"],
                             "type": ["VerifiableCredential"] * 40_000}}
    assert_error(post(api, "/api/v1/credentials/verify", json.dumps(padded)), 400, names="at most 64")
    many = {"verifiable": {"@context": [], "credentialSubject": {f"k{i}": i for i in range(3000)}}}
    assert_error(post(api, "/api/v1/credentials/verify", json.dumps(many)), 400, names="members")


def study(**changes) -> str:
    body = {"identifier": "s-1", "title": "T", "institution": "I", "commercial": False,
            "uses": [{"permission": "DUO:0000006"}]}
    return json.dumps({**body, **changes})


def test_study_fields_are_checked_against_their_columns_and_uses_listed_once(api, duo_terms):
    long_disease = study(uses=[{"permission": "DUO:0000007", "disease_id": "MONDO:" + "1" * 40}])
    assert_error(post(api, "/api/v1/studies", long_disease), 400, names="disease_id")
    twice = study(uses=[{"permission": "DUO:0000006"}, {"permission": "DUO:0000006"}])
    assert_error(post(api, "/api/v1/studies", twice), 400, names="list each use once")
    assert not Study.objects.exists() and not StudyUse.objects.exists()
    assert post(api, "/api/v1/studies", study()).status_code == 201


@pytest.fixture
def duo_terms(purposes):
    return purposes


def test_numbers_past_a_bigint_in_paths_and_queries_are_not_found_or_invalid(api, settings):
    settings.LEDGER_PUBLIC = True
    huge = "9" * 30
    assert_error(api.get(f"/api/v1/ledger/entries/{huge}"), 404, names="No such endpoint")
    assert_error(api.post(f"/api/v1/withdrawals/{huge}/confirm"), 404)
    assert_error(api.get("/api/v1/ledger/tile/entries/" + "x999/" * 12 + "999"), 404)
    assert_error(api.get(f"/api/v1/ledger/entries?start={huge}"), 400, names="start")
    assert_error(api.get(f"/api/v1/ledger/proofs/inclusion?index={huge}&tree_size={huge}"), 400)
    assert_error(api.get(f"/api/v1/withdrawals?since={huge}"), 400, names="since")


def test_unknown_api_paths_answer_json_even_with_debug_on(api, settings):
    settings.DEBUG = True
    for path in ("/api/v1/nothing-here", "/api/v2/consent-checks", "/credentials/nothing"):
        assert_error(api.get(path), 404, names="No such endpoint")
    assert_error(Client().get("/api/v1/nothing-here"), 404)


def test_people_get_pages_of_our_own_for_404_and_403(client, participant, settings):
    settings.DEBUG = False
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and b"Page not found" in response.content
    assert b"URLconf" not in response.content
    client.force_login(participant.user)
    response = client.get("/ethics/")
    assert response.status_code == 403 and b"Only ethics-committee members may see this page." in response.content


def test_an_unreachable_database_is_a_503_with_retry_after():
    request = RequestFactory().post("/api/v1/consent-checks")
    middleware = errors.DatabaseUnavailableMiddleware(lambda r: None)
    response = middleware.process_exception(
        request, OperationalError('connection failed: connection to server at "127.0.0.1", port 5432 failed'))
    assert response.status_code == 503 and response["Retry-After"] == "30"
    assert json.loads(response.content)["error"] == "unavailable"
    page = middleware.process_exception(RequestFactory().get("/portal/"), OperationalError("server closed the connection"))
    assert page.status_code == 503 and b"Briefly unavailable" in page.content
    # A query error that is not an outage stays a bug (500), not a 503 that hides it.
    assert middleware.process_exception(request, OperationalError("no such table: x")) is None


def test_impossible_dates_are_form_errors(client, participant, purposes, ethics_member):
    consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    client.force_login(participant.user)
    response = client.post(f"/portal/consents/{consent.pk}/suspend/", {"until": "2027-02-31"}, follow=True)
    assert response.status_code == 200
    consent.refresh_from_db()
    assert consent.state == "granted"
    study_ = services.study_submit(identifier="x-study", title="T", institution="I", commercial=False,
                                   uses=[{"permission": "DUO:0000006"}])
    use = study_.uses.get()
    client.force_login(ethics_member)
    response = client.post(f"/ethics/uses/{use.pk}/decide/", {"decision": "approve", "expires_on": "2027-02-31"},
                           follow=True)
    assert response.status_code == 200 and b"YYYY-MM-DD" in response.content
    use.refresh_from_db()
    assert use.status == StudyUse.PENDING


def test_a_262_character_email_at_sign_up_is_a_form_error(client, db):
    email = "a" * 250 + "@example.org"
    response = client.post("/signup/", {"username": "newperson", "password1": "a long test password 9",
                                        "password2": "a long test password 9", "email": email})
    assert response.status_code == 200 and b"at most 254 characters" in response.content
    assert not get_user_model().objects.filter(username="newperson").exists()


def test_an_approval_whose_request_task_was_lost_is_asked_by_the_sweep(participant, purposes, monkeypatch):
    from consent_portal import tasks
    from consent_portal.models import ConsentRequest

    study_ = services.study_submit(identifier="lost-task", title="T", institution="I", commercial=False,
                                   uses=[{"permission": "DUO:0000006"}])
    use = study_.uses.get()
    # The broker is down when the committee approves: the task never runs.
    monkeypatch.setattr(tasks.consent_requests_send, "delay", lambda **kwargs: None)
    services.study_use_decide(use_id=use.pk, approve=True, member=None)
    assert not ConsentRequest.objects.exists() and services.consent_requests_due() == [use.pk]
    assert tasks.consent_requests_sweep() == 1
    assert ConsentRequest.objects.get().participant == participant and services.consent_requests_due() == []


def test_a_body_in_an_impossible_charset_is_refused_by_the_parser():
    import io

    from consent_portal.api.parsers import JsonBodyError, SafeJSONParser

    # punycode cannot decode JSON's quotes: a UnicodeError, which was a 500.
    with pytest.raises(JsonBodyError, match="not punycode text"):
        SafeJSONParser().parse(io.BytesIO(b'{"sample": "S-1"}'), parser_context={"encoding": "punycode"})
