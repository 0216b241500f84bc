import pytest

from consent_portal import services
from consent_portal.models import Consent, ConsentEvent, Participant
from identity import selectors as identity_selectors
from identity.models import IssuedCredential
from ledger.models import Entry
from ledger.selectors import entry_bytes
from tests.ledger import read


def test_sign_up_gives_a_did_and_an_enrolment_credential_naming_it(participant):
    assert participant.did.startswith("did:key:z6Mk")
    document = identity_selectors.credential_document(credential_id=participant.enrolment_credential_id)
    assert "EnrolmentCredential" in document["type"]
    assert document["credentialSubject"]["id"] == participant.did
    assert document["proof"]["type"] == "Ed25519Signature2018"


def test_grant_issues_a_consent_credential_and_a_pending_ledger_entry(participant, purposes):
    consent = services.consent_grant(participant=participant, purpose=purposes["health-medical-research"])
    document = identity_selectors.credential_document(credential_id=consent.credential_id)
    assert "ConsentCredential" in document["type"]
    assert document["credentialSubject"]["id"] == participant.did
    assert document["credentialSubject"]["purpose"] == "DUO:0000006"
    event = consent.events.get()
    assert (event.action, event.state_after) == ("grant", "granted")
    payload = entry_bytes(entry_id=event.ledger_entry.id).decode()
    assert str(participant.pseudonym) not in payload and consent.credential_id not in payload
    assert "alice" not in payload  # the username never reaches the ledger
    # The entry commits to both, and the openings kept for it prove so.
    opened = read.opened(event.ledger_entry)
    assert (opened["participant"], opened["credential"]) == (str(participant.pseudonym), consent.credential_id)


def test_suspend_resume_revoke_follow_the_state_machine_and_the_status_lists(participant, purposes):
    consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    cid = consent.credential_id
    services.consent_change(participant=participant, consent_id=consent.pk, action="suspend")
    assert identity_selectors.credential_status(credential_id=cid) == {"revoked": False, "suspended": True}
    services.consent_change(participant=participant, consent_id=consent.pk, action="resume")
    assert identity_selectors.credential_status(credential_id=cid) == {"revoked": False, "suspended": False}
    services.consent_change(participant=participant, consent_id=consent.pk, action="revoke")
    assert identity_selectors.credential_status(credential_id=cid)["revoked"] is True
    with pytest.raises(services.ConsentStateError):
        services.consent_change(participant=participant, consent_id=consent.pk, action="resume")
    actions = list(ConsentEvent.objects.filter(consent=consent).order_by("created_at").values_list("action", flat=True))
    assert actions == ["grant", "suspend", "resume", "revoke"]


def test_re_consent_after_revocation_is_a_new_credential(participant, purposes):
    purpose = purposes["general-research"]
    first = services.consent_grant(participant=participant, purpose=purpose)
    with pytest.raises(services.ConsentStateError):
        services.consent_grant(participant=participant, purpose=purpose)
    services.consent_change(participant=participant, consent_id=first.pk, action="revoke")
    second = services.consent_grant(participant=participant, purpose=purpose)
    assert second.credential_id != first.credential_id
    assert identity_selectors.credential_status(credential_id=first.credential_id)["revoked"] is True
    assert identity_selectors.credential_status(credential_id=second.credential_id)["revoked"] is False


def test_a_participant_cannot_change_another_participants_consent(make_participant, purposes):
    alice, bob = make_participant("alice"), make_participant("bob")
    consent = services.consent_grant(participant=alice, purpose=purposes["general-research"])
    with pytest.raises(Consent.DoesNotExist):
        services.consent_change(participant=bob, consent_id=consent.pk, action="revoke")
    consent.refresh_from_db()
    assert consent.state == "granted"


def _counts():
    return (
        Consent.objects.count(),
        ConsentEvent.objects.count(),
        Entry.objects.count(),
        IssuedCredential.objects.count(),
    )


def test_a_failure_while_recording_a_grant_leaves_nothing_half_written(participant, purposes, monkeypatch):
    before = _counts()

    def ledger_down(**kwargs):
        raise RuntimeError("ledger write failed")

    monkeypatch.setattr(services.ledger_services, "entry_append", ledger_down)
    with pytest.raises(RuntimeError):
        services.consent_grant(participant=participant, purpose=purposes["general-research"])
    assert _counts() == before


def test_a_failure_while_recording_a_revocation_leaves_the_consent_and_its_status_untouched(
    participant, purposes, monkeypatch
):
    consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    before = _counts()
    monkeypatch.setattr(
        services.ledger_services, "entry_append", lambda **kw: (_ for _ in ()).throw(RuntimeError("boom"))
    )
    with pytest.raises(RuntimeError):
        services.consent_change(participant=participant, consent_id=consent.pk, action="revoke")
    consent.refresh_from_db()
    assert consent.state == "granted"
    assert identity_selectors.credential_status(credential_id=consent.credential_id)["revoked"] is False
    assert _counts() == before


def test_enrolment_failure_leaves_no_user_or_participant(db, monkeypatch):
    from django.contrib.auth import get_user_model

    monkeypatch.setattr(
        services.identity_services, "credential_issue", lambda **kw: (_ for _ in ()).throw(RuntimeError("x"))
    )
    with pytest.raises(RuntimeError):
        services.participant_sign_up(username="carol", password="a long test password 1")
    assert not get_user_model().objects.filter(username="carol").exists()
    assert Participant.objects.count() == 0
