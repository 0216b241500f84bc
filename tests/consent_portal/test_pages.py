import json

import pytest
from django.test import Client

from consent_portal import services
from consent_portal.models import Consent, StudyUse


@pytest.fixture
def alice_client(participant):
    client = Client()
    client.force_login(participant.user)
    return client


def test_sign_up_enrols_and_logs_in(db, purposes):
    client = Client()
    response = client.post(
        "/signup/", {"username": "dora", "password1": "a long test password 1", "password2": "a long test password 1"}
    )
    assert response.status_code == 302 and response["Location"] == "/portal/"
    page = client.get("/portal/").content.decode()
    assert "did:key:z6Mk" in page


def test_the_identity_page_says_who_holds_the_participants_key(alice_client, participant):
    page = alice_client.get("/portal/").content.decode()
    assert "The portal holds the key of this DID for you" in page and "Hold your own key instead" in page
    participant.key_custody = participant.SELF_CUSTODY
    participant.save(update_fields=["key_custody"])
    page = alice_client.get("/portal/").content.decode()
    assert "You hold the key of this DID" in page and "portal holds the key" not in page


def test_consent_page_lists_duo_purposes(alice_client, purposes):
    page = alice_client.get("/portal/consents/").content.decode()
    for duo_id in ("DUO:0000042", "DUO:0000006", "DUO:0000007", "DUO:0000046", "MONDO:0005015"):
        assert duo_id in page


def test_grant_suspend_resume_revoke_through_the_pages(alice_client, participant, purposes):
    alice_client.post("/portal/consents/grant/general-research/")
    consent = Consent.objects.get(participant=participant)
    for action, state in (("suspend", "suspended"), ("resume", "granted"), ("revoke", "revoked")):
        response = alice_client.post(f"/portal/consents/{consent.pk}/{action}/")
        assert response.status_code == 302
        consent.refresh_from_db()
        assert consent.state == state


def test_changing_another_participants_consent_is_404(make_participant, purposes):
    alice, bob = make_participant("alice"), make_participant("bob")
    consent = services.consent_grant(participant=alice, purpose=purposes["general-research"])
    bob_client = Client()
    bob_client.force_login(bob.user)
    assert bob_client.post(f"/portal/consents/{consent.pk}/revoke/").status_code == 404
    consent.refresh_from_db()
    assert consent.state == "granted"


def test_pages_show_only_the_participants_own_data(make_participant, purposes):
    alice, bob = make_participant("alice"), make_participant("bob")
    consent = services.consent_grant(participant=alice, purpose=purposes["general-research"])
    bob_client = Client()
    bob_client.force_login(bob.user)
    uuid = consent.credential_id.removeprefix("urn:uuid:")
    assert bob_client.get(f"/portal/credentials/{uuid}.json").status_code == 404
    everything = "".join(
        bob_client.get(url).content.decode()
        for url in ("/portal/", "/portal/consents/", "/portal/history/", "/portal/credentials/?format=json")
    )
    assert alice.did not in everything and consent.credential_id not in everything
    assert str(alice.pseudonym) not in everything


def test_history_is_newest_first_with_ledger_index_once_sealed(
    alice_client, participant, purposes, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    with django_capture_on_commit_callbacks(execute=True):
        services.consent_change(participant=participant, consent_id=consent.pk, action="suspend")
    page = alice_client.get("/portal/history/").content.decode()
    assert page.index(">suspend<") < page.index(">grant<")
    assert "pending" not in page
    events = consent.events.select_related("ledger_entry").order_by("created_at")
    for event in events:
        assert f"#{event.ledger_entry.index}" in page


def test_credentials_download_as_json(alice_client, participant, purposes):
    consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    everything = alice_client.get("/portal/credentials/?format=json")
    assert everything["Content-Disposition"].startswith("attachment")
    ids = [doc["id"] for doc in json.loads(everything.content)]
    assert ids == [participant.enrolment_credential_id, consent.credential_id]
    one = alice_client.get(f"/portal/credentials/{consent.credential_id.removeprefix('urn:uuid:')}.json")
    assert json.loads(one.content)["id"] == consent.credential_id


def test_ethics_dashboard_is_for_members_only(alice_client):
    assert alice_client.get("/ethics/").status_code == 403


def test_ethics_member_approves_a_study_use_and_sees_the_ledger(ethics_member, purposes, participant):
    study = services.study_submit(
        identifier="s1", title="t", institution="i", commercial=False, uses=[{"permission": "DUO:0000042"}]
    )
    use = study.uses.get()
    client = Client()
    client.force_login(ethics_member)
    page = client.get("/ethics/").content.decode()
    assert "s1" in page and "pending" in page and "Entries sealed" in page
    client.post(f"/ethics/uses/{use.pk}/decide/", {"decision": "approve"})
    use.refresh_from_db()
    assert use.status == StudyUse.APPROVED and use.decided_by == ethics_member
    assert client.post(f"/ethics/uses/{use.pk}/decide/", {"decision": "maybe"}).status_code == 302
    use.refresh_from_db()
    assert use.status == StudyUse.APPROVED


def test_load_demo_is_idempotent(db, capsys, settings):
    settings.DEBUG = True
    from django.core.management import call_command

    call_command("load_demo")
    call_command("load_demo")
    out = capsys.readouterr().out
    assert "participant / demo-participant-pw" in out
    assert Consent.objects.count() == 0
    assert StudyUse.objects.filter(status="approved").count() == 1


def test_purpose_admin_refuses_a_modifier_without_its_parameters(db):
    from consent_portal.admin import PurposeForm

    data = {"slug": "uk-only", "title": "UK only", "explanation": "x", "permission": "DUO:0000042",
            "modifiers": ["DUO:0000022"], "modifier_params": "{}", "position": 0, "disease_id": "",
            "disease_label": ""}
    form = PurposeForm(data=data)
    assert not form.is_valid() and "modifier_params" in form.errors
    form = PurposeForm(data={**data, "modifier_params": '{"DUO:0000022": {"countries": ["GB"]}}'})
    assert form.is_valid(), form.errors


def test_ethics_dashboard_shows_witness_refusals(ethics_member):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from ledger import cosign, services as ledger_services
    from ledger.models import WitnessRefusal

    public = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    member = ledger_services.member_register(
        name="witness.example.org", verifier_key=cosign.verifier_key("witness.example.org", public),
        witness_url="http://127.0.0.1:9/",
    )
    client = Client()
    client.force_login(ethics_member)
    page = client.get("/ethics/").content.decode()
    assert "witness.example.org" in page and "may have been rewritten" not in page
    WitnessRefusal.objects.create(member=member, size=12, root_hash=b"\0" * 32, status=422,
                                  detail="consistency proof does not verify")
    page = client.get("/ethics/").content.decode()
    assert "may have been rewritten or forked" in page and "consistency proof does not verify" in page


def test_suspend_until_a_date_through_the_page(alice_client, participant, purposes):
    from datetime import date, timedelta

    alice_client.post("/portal/consents/grant/general-research/")
    consent = Consent.objects.get(participant=participant)
    past = (date.today() - timedelta(days=1)).isoformat()
    alice_client.post(f"/portal/consents/{consent.pk}/suspend/", {"until": past})
    consent.refresh_from_db()
    assert consent.state == "granted"  # an end in the past is refused
    future = (date.today() + timedelta(days=14)).isoformat()
    alice_client.post(f"/portal/consents/{consent.pk}/suspend/", {"until": future})
    consent.refresh_from_db()
    assert consent.state == "suspended" and consent.suspended_until.date().isoformat() == future
    assert f"until {future}" in alice_client.get("/portal/consents/").content.decode()
