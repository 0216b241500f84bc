"""A sample belongs to a participant only through enrolment: a custodian registers samples
only for participants who handed it their one-time donation code; knowing a participant
code is not enough, and answers never tell whether a code exists elsewhere."""

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from consent_portal import services
from consent_portal.models import DonationCode, Enrolment, Sample


def post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


@pytest.fixture
def lab_a(db):
    custodian, token = services.custodian_create(name="Lab A")
    return custodian, Client(HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.fixture
def lab_b(db):
    custodian, token = services.custodian_create(name="Lab B")
    return custodian, Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def test_a_donation_code_enrols_once_and_each_custodian_gets_its_own_reference(participant, lab_a, lab_b):
    code = services.donation_code_create(participant=participant)
    assert len(code) == 14 and code.count("-") == 2
    first = post(lab_a[1], "/api/v1/enrolments", {"code": code.lower().replace("-", " ")})
    assert first.status_code == 201
    spent = post(lab_b[1], "/api/v1/enrolments", {"code": code})
    unknown = post(lab_b[1], "/api/v1/enrolments", {"code": "0000-0000-0000"})
    # A used code and a made-up one get the very same answer.
    assert spent.status_code == unknown.status_code == 404 and spent.json() == unknown.json()
    second = post(lab_b[1], "/api/v1/enrolments", {"code": services.donation_code_create(participant=participant)})
    assert second.status_code == 201
    assert first.json()["participant"] != second.json()["participant"]
    # Enrolling again with the same custodian keeps its reference.
    again = post(lab_a[1], "/api/v1/enrolments", {"code": services.donation_code_create(participant=participant)})
    assert again.status_code == 200 and again.json()["participant"] == first.json()["participant"]
    assert Enrolment.objects.count() == 2
    assert not DonationCode.objects.filter(code_hash=code).exists()  # stored hashed


def test_an_expired_or_replaced_code_enrols_nobody(participant, lab_a):
    old = services.donation_code_create(participant=participant)
    new = services.donation_code_create(participant=participant)
    assert post(lab_a[1], "/api/v1/enrolments", {"code": old}).status_code == 404
    DonationCode.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert post(lab_a[1], "/api/v1/enrolments", {"code": new}).status_code == 404
    assert not Enrolment.objects.exists()


def test_knowing_a_participant_code_is_not_enough_to_register_a_sample(make_participant, lab_a, lab_b):
    alice, bob = make_participant("alice"), make_participant("bob")
    reference = post(lab_a[1], "/api/v1/enrolments",
                     {"code": services.donation_code_create(participant=alice)}).json()["participant"]
    assert post(lab_a[1], "/api/v1/samples", {"sample": "A-1", "participant": reference, "kind": "blood"}).status_code == 201
    # Lab A knows Bob's participant code, but Bob never enrolled with it.
    stolen = post(lab_a[1], "/api/v1/samples", {"sample": "A-2", "participant": str(bob.pseudonym), "kind": "blood"})
    # Lab B knows Lab A's reference for Alice, and Alice's code: neither is its own.
    borrowed = post(lab_b[1], "/api/v1/samples", {"sample": "B-1", "participant": reference, "kind": "blood"})
    by_code = post(lab_b[1], "/api/v1/samples", {"sample": "B-2", "participant": str(alice.pseudonym), "kind": "blood"})
    nowhere = post(lab_b[1], "/api/v1/samples", {"sample": "B-3", "participant": "P-doesnotexist", "kind": "blood"})
    for response in (stolen, borrowed, by_code, nowhere):
        assert response.status_code == 404 and response.json()["error"] == "unknown_participant"
    # The same sentence, but for the reference it repeats: nothing says which exist.
    assert stolen.json()["detail"].replace(str(bob.pseudonym), "X") == nowhere.json()["detail"].replace(
        "P-doesnotexist", "X")
    assert list(Sample.objects.values_list("identifier", flat=True)) == ["A-1"]


def test_integrations_that_send_the_participant_code_keep_working_where_enrolled(participant, lab_a):
    services.custodian_enrolment_ensure(custodian=lab_a[0], participant=participant)
    response = post(lab_a[1], "/api/v1/samples", {"sample": "A-1", "participant": str(participant.pseudonym),
                                                   "kind": "blood"})
    assert response.status_code == 201
    assert response.json()["participant"] == Enrolment.objects.get().reference


def test_an_erased_participant_enrols_nowhere_and_gets_no_samples(participant, lab_a):
    code = services.donation_code_create(participant=participant)
    services.custodian_enrolment_ensure(custodian=lab_a[0], participant=participant)
    services.participant_erase(participant=participant)
    assert post(lab_a[1], "/api/v1/enrolments", {"code": code}).status_code == 404
    response = post(lab_a[1], "/api/v1/samples", {"sample": "A-1", "participant": str(participant.pseudonym),
                                                   "kind": "blood"})
    assert response.status_code == 404


@pytest.mark.parametrize("body", [{}, {"code": ""}, {"code": "x" * 41}, {"code": ["a"]}, {"code": "AB\u0000CD"},
                                  {"code": "AB\ud800CD"}, {"code": "ＡＢＣＤ"}])
def test_a_malformed_enrolment_is_a_400_naming_the_field(lab_a, body):
    response = post(lab_a[1], "/api/v1/enrolments", body)
    assert response.status_code == 400 and "code" in response.json()["fields"]


@pytest.mark.parametrize("who", ["", "P-\u0000", "P-\ud800", "x" * 65, "P 1", ["P-1"]])
def test_a_malformed_participant_reference_is_a_400_naming_the_field(lab_a, who):
    response = post(lab_a[1], "/api/v1/samples", {"sample": "S-1", "participant": who, "kind": "blood"})
    assert response.status_code == 400 and "participant" in response.json()["fields"]


def test_the_participant_gets_a_code_on_their_page_and_sees_who_enrolled_them(participant, lab_a):
    client = Client()
    client.force_login(participant.user)
    page = client.post("/portal/donation-code/").content.decode()
    assert 'data-testid="donation-code"' in page
    code = page.split('data-testid="donation-code">')[1].split("<")[0]
    assert post(lab_a[1], "/api/v1/enrolments", {"code": code}).status_code == 201
    page = client.get("/portal/").content.decode()
    assert "Lab A" in page and 'data-testid="donation-code"' not in page


def test_the_openapi_schema_declares_what_enrolment_and_samples_answer(participant, lab_a, client):
    schema = json.loads(client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").content)
    components = schema["components"]["schemas"]

    def properties(path, status):
        content = schema["paths"][path]["post"]["responses"][status]["content"]["application/json"]["schema"]
        return set(components[content["$ref"].rsplit("/", 1)[1]]["properties"])

    common = {"400", "401", "403", "404", "405", "413", "415", "429", "503"}  # every endpoint's (api/schema.py)
    assert set(schema["paths"]["/api/v1/enrolments"]["post"]["responses"]) == {"200", "201"} | common
    assert set(schema["paths"]["/api/v1/samples"]["post"]["responses"]) == {"201", "409"} | common
    code = services.donation_code_create(participant=participant)
    enrolled = post(lab_a[1], "/api/v1/enrolments", {"code": code})
    assert set(enrolled.json()) == properties("/api/v1/enrolments", "201")
    refused = post(lab_a[1], "/api/v1/enrolments", {"code": code})
    assert refused.status_code == 404 and set(refused.json()) <= properties("/api/v1/enrolments", "404")
    body = {"sample": "A-1", "participant": enrolled.json()["participant"], "kind": "blood"}
    registered = post(lab_a[1], "/api/v1/samples", body)
    assert set(registered.json()) == properties("/api/v1/samples", "201")
    for response, status in ((post(lab_a[1], "/api/v1/samples", body), "409"),
                             (post(lab_a[1], "/api/v1/samples", {**body, "participant": "P-x"}), "404"),
                             (post(lab_a[1], "/api/v1/samples", {**body, "kind": "hair"}), "400"),
                             (post(Client(HTTP_AUTHORIZATION="Bearer nope"), "/api/v1/samples", body), "401")):
        assert str(response.status_code) == status and response["Content-Type"] == "application/json"
        assert {"error", "detail"} <= set(response.json()) <= properties("/api/v1/samples", status)
