"""Participant-held keys: DID Auth registration, signed decisions, custody changes.

The browser's part (WebCrypto, ES256) is played by jwcrypto here with the same JWT VP shape
as static/identity/keys.js; tests/browser/test_identity_keys.py drives the real page.
"""

import hashlib
import time

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from jwcrypto import jwk

from consent_portal import services
from consent_portal.models import (
    ConsentEvent,
    ConsentRequest,
    Participant,
    Withdrawal,
    WithdrawalInstruction,
)
from identity import didkit_backend, jwt
from identity.models import Challenge, DidKey
from ledger.models import Entry
from tests.ledger import read

DOMAIN = "portal.test"
PASSWORD = "a long test password 1"


class BrowserKey:
    """A P-256 key and the JWT VPs keys.js makes with it."""

    def __init__(self):
        self.key = jwk.JWK.generate(kty="EC", crv="P-256")
        self.did = didkit_backend.did_key_from_jwk(self.key.export_public())

    def present(self, *, nonce, domain=DOMAIN, decision=None, did=None, lifetime=300):
        did = did or self.did
        now = int(time.time())
        claims = {
            "iss": did, "aud": domain, "nonce": nonce, "iat": now, "exp": now + lifetime,
            "vp": {"@context": ["https://www.w3.org/2018/credentials/v1"],
                   "type": ["VerifiablePresentation"], "holder": did},
        }
        if decision is not None:
            claims["decision"] = decision
        return jwt.sign(claims, private_jwk=self.key.export_private(),
                        kid=f"{did}#{did.removeprefix('did:key:')}")


def register(participant, key):
    nonce = services.participant_key_challenge(participant=participant, domain=DOMAIN)
    return services.participant_key_register(
        participant=participant, presentation=key.present(nonce=nonce), password=PASSWORD, label="laptop"
    )


@pytest.fixture
def holder(participant):
    key = BrowserKey()
    return register(participant, key), key


def signed(participant, key, **decision):
    challenge = services.decision_challenge_create(participant=participant, domain=DOMAIN, **decision)
    return challenge, key.present(nonce=challenge["nonce"], decision=challenge["decision"])


def test_did_key_for_p256_resolves_offline_with_didkit():
    key = BrowserKey()
    assert key.did.startswith("did:key:zDn")
    document = didkit_backend.resolve_did(key.did)
    assert document["verificationMethod"][0]["publicKeyJwk"]["crv"] == "P-256"


def test_registering_a_browser_key_ends_custody_and_is_on_the_ledger(participant):
    custodial_did = participant.did
    key = BrowserKey()
    participant = register(participant, key)
    assert (participant.did, participant.key_custody) == (key.did, "participant")
    portal_key = DidKey.objects.get(did=custodial_did)
    assert portal_key.retired_at is not None and portal_key.encrypted_jwk == ""
    assert DidKey.objects.get(did=key.did).encrypted_jwk == ""
    payloads = [read.opened(entry) for entry in Entry.objects.all()]
    entries = {p["kind"]: p for p in payloads if p["kind"].startswith("participant.key")}
    assert entries["participant.key_added"]["did"] == key.did
    assert entries["participant.key_added"]["custody"] == "participant"
    assert entries["participant.key_retired"] == {
        **entries["participant.key_retired"], "did": custodial_did, "custody": "portal",
        "participant": str(participant.pseudonym),
    }


@pytest.mark.parametrize("change", ["replay", "wrong-password", "other-domain", "other-participant", "decision-nonce"])
def test_did_auth_is_refused(participant, make_participant, change):
    key = BrowserKey()
    nonce = services.participant_key_challenge(participant=participant, domain=DOMAIN)
    token = key.present(nonce=nonce, domain="evil.test" if change == "other-domain" else DOMAIN)
    password = "wrong" if change == "wrong-password" else PASSWORD
    target = participant
    if change == "replay":
        services.participant_key_register(participant=participant, presentation=token, password=PASSWORD)
        target = Participant.objects.get(pk=participant.pk)
    elif change == "other-participant":
        target = make_participant("bob")
        password = PASSWORD
    elif change == "decision-nonce":
        token = key.present(nonce=Challenge.objects.create(
            nonce="n" * 20, purpose="decision", bound_to=str(participant.pseudonym),
            expected={"domain": DOMAIN, "decision": {}}, created_at=Challenge.objects.get(nonce=nonce).created_at,
            expires_at=Challenge.objects.get(nonce=nonce).expires_at).nonce)
    before = target.did
    with pytest.raises(services.KeyChangeError):
        services.participant_key_register(participant=target, presentation=token, password=password)
    assert Participant.objects.get(pk=target.pk).did == before


def test_custodial_decisions_are_signed_by_the_portal_and_say_so(participant, purposes):
    consent = services.consent_grant(participant=participant, purpose=purposes["general-research"])
    event = consent.events.get()
    assert event.signed_by == "portal-custodial-key"
    claims = jwt.claims(event.decision_jwt)
    assert claims["iss"] == participant.did and claims["decision"]["action"] == "grant"
    result = didkit_backend.verify_presentation(event.decision_jwt, challenge=claims["nonce"], domain=claims["aud"])
    assert result["errors"] == []
    payload = read.opened(event.ledger_entry)
    assert payload["signed_by"] == "portal-custodial-key"
    assert payload["decision_sha256"] == hashlib.sha256(event.decision_jwt.encode()).hexdigest()


def test_a_self_held_key_signs_grant_suspend_resume_revoke(holder, purposes):
    participant, key = holder
    purpose = purposes["general-research"]
    _, token = signed(participant, key, action="grant", purpose=purpose)
    consent = services.consent_grant(participant=participant, purpose=purpose, signed_decision=token)
    for action in ("suspend", "resume", "revoke"):
        _, token = signed(participant, key, action=action, consent_id=consent.pk)
        services.consent_change(participant=participant, consent_id=consent.pk, action=action, signed_decision=token)
    events = list(consent.events.order_by("created_at"))
    assert [e.action for e in events] == ["grant", "suspend", "resume", "revoke"]
    for event in events:
        assert event.signed_by == "participant-key"
        assert jwt.claims(event.decision_jwt)["decision"]["action"] == event.action
        payload = read.opened(event.ledger_entry)
        assert payload["decision_sha256"] == hashlib.sha256(event.decision_jwt.encode()).hexdigest()
        assert payload["signed_by"] == "participant-key"


def test_with_a_self_held_key_the_portal_cannot_decide_alone(holder, purposes):
    participant, _ = holder
    with pytest.raises(services.ConsentStateError, match="sign this decision"):
        services.consent_grant(participant=participant, purpose=purposes["general-research"])
    assert not participant.consents.exists()


def _refused(participant, purpose, token, check):
    with pytest.raises(services.ConsentStateError, match=rf"\({check}\)"):
        services.consent_grant(participant=participant, purpose=purpose, signed_decision=token)
    assert not participant.consents.exists()
    assert not ConsentEvent.objects.exists()


def test_a_decision_signed_by_another_key_is_refused(holder, purposes):
    participant, key = holder
    purpose = purposes["general-research"]
    challenge, _ = signed(participant, key, action="grant", purpose=purpose)
    forger = BrowserKey()
    # The forger's own DID: a valid signature, but not a key of this participant.
    _refused(participant, purpose, forger.present(nonce=challenge["nonce"], decision=challenge["decision"]), "signer")


def test_a_decision_claiming_the_participants_did_but_signed_by_another_key_is_refused(holder, purposes):
    participant, key = holder
    purpose = purposes["general-research"]
    challenge, _ = signed(participant, key, action="grant", purpose=purpose)
    forger = BrowserKey()
    token = forger.present(nonce=challenge["nonce"], decision=challenge["decision"], did=key.did)
    _refused(participant, purpose, token, "signature")


def test_a_replayed_decision_is_refused(holder, purposes):
    participant, key = holder
    purpose = purposes["general-research"]
    _, token = signed(participant, key, action="grant", purpose=purpose)
    consent = services.consent_grant(participant=participant, purpose=purpose, signed_decision=token)
    services.consent_change(participant=participant, consent_id=consent.pk, action="revoke",
                            signed_decision=signed(participant, key, action="revoke", consent_id=consent.pk)[1])
    # The grant's nonce is spent: the same signed grant cannot grant again.
    with pytest.raises(services.ConsentStateError, match=r"\(challenge\).*replay"):
        services.consent_grant(participant=participant, purpose=purpose, signed_decision=token)
    assert participant.consents.count() == 1


def test_an_altered_decision_is_refused(holder, purposes):
    participant, key = holder
    purpose = purposes["general-research"]
    challenge, _ = signed(participant, key, action="grant", purpose=purpose)
    altered = {**challenge["decision"], "permission": "DUO:0000006"}
    _refused(participant, purpose, key.present(nonce=challenge["nonce"], decision=altered), "payload")


def test_a_tampered_token_is_refused(holder, purposes):
    participant, key = holder
    purpose = purposes["general-research"]
    _, token = signed(participant, key, action="grant", purpose=purpose)
    head, body, signature = token.split(".")
    claims = jwt.claims(token)
    claims["decision"]["permission"] = "DUO:0000006"
    altered_body = jwt.sign(claims, private_jwk=BrowserKey().key.export_private(), kid="x").split(".")[1]
    # The participant's signature over the original payload, on an altered payload.
    _refused(participant, purpose, f"{head}.{altered_body}.{signature}", "signature")


def test_a_decision_for_another_change_is_refused(holder, purposes):
    participant, key = holder
    _, token = signed(participant, key, action="grant", purpose=purposes["health-medical-research"])
    _refused(participant, purposes["general-research"], token, "payload")


def test_a_decision_for_another_domain_is_refused(holder, purposes):
    participant, key = holder
    purpose = purposes["general-research"]
    challenge, _ = signed(participant, key, action="grant", purpose=purpose)
    _refused(participant, purpose, key.present(nonce=challenge["nonce"], domain="evil.test",
                                               decision=challenge["decision"]), "domain")


def test_an_expired_nonce_is_refused(holder, purposes):
    participant, key = holder
    purpose = purposes["general-research"]
    challenge, token = signed(participant, key, action="grant", purpose=purpose)
    Challenge.objects.filter(nonce=challenge["nonce"]).update(expires_at=Challenge.objects.get(
        nonce=challenge["nonce"]).created_at)
    _refused(participant, purpose, token, "challenge")


def test_a_retired_device_key_can_no_longer_sign_and_a_new_device_can(holder, purposes):
    participant, lost = holder
    new = BrowserKey()
    participant = register(participant, new)
    assert participant.did == new.did
    services.participant_key_retire(participant=participant, did=lost.did, password=PASSWORD)
    purpose = purposes["general-research"]
    _, token = signed(participant, lost, action="grant", purpose=purpose)
    _refused(participant, purpose, token, "signer")
    _, token = signed(participant, new, action="grant", purpose=purpose)
    services.consent_grant(participant=participant, purpose=purpose, signed_decision=token)
    kinds = read.kinds()
    assert kinds.count("participant.key_added") == 2 and kinds.count("participant.key_retired") == 2


def test_retiring_a_key_needs_the_password(holder):
    participant, key = holder
    with pytest.raises(services.KeyChangeError):
        services.participant_key_retire(participant=participant, did=key.did, password="wrong")
    assert DidKey.objects.get(did=key.did).retired_at is None


# Withdrawal: a signed decision like the others ------------------------------------------------


@pytest.fixture
def donor(holder, purposes, custodian_and_token):
    """A self-held participant with a signed consent, a sample and an open study request."""
    participant, key = holder
    purpose = purposes["general-research"]
    services.consent_grant(participant=participant, purpose=purpose,
                           signed_decision=signed(participant, key, action="grant", purpose=purpose)[1])
    services.sample_register(custodian=custodian_and_token[0], identifier="S-1", participant=participant, kind="blood")
    study = services.study_submit(identifier="heart-2026", title="Heart study", institution="U",
                                  commercial=False, uses=[{"permission": "DUO:0000006"}])
    ConsentRequest.objects.create(use=study.uses.get(), participant=participant,
                                  purpose=purposes["health-medical-research"])
    return participant, key


def withdrawal_signed(participant, key, level, **present):
    challenge = services.withdrawal_challenge_create(participant=participant, level=level, domain=DOMAIN)
    return challenge, key.present(nonce=challenge["nonce"], decision=challenge["decision"], **present)


def _payload(entry):
    return read.opened(entry)  # clear fields and the committed values their openings prove


@pytest.mark.parametrize("level, revoked", [("no_contact", False), ("no_access", True), ("no_use", True)])
def test_a_self_held_key_signs_a_withdrawal(donor, level, revoked):
    participant, key = donor
    challenge, token = withdrawal_signed(participant, key, level)
    assert challenge["decision"] == {
        "type": "WithdrawalDecision", "participant": key.did, "level": level,
        "nonce": challenge["nonce"], "issued_at": challenge["decision"]["issued_at"], "domain": DOMAIN,
    }
    withdrawal = services.participant_withdraw(participant=participant, level=level, signed_decision=token)
    withdrawal.refresh_from_db()
    assert (withdrawal.signed_by, withdrawal.decision_jwt) == ("participant-key", token)
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert _payload(withdrawal.ledger_entry) == {
        **_payload(withdrawal.ledger_entry), "level": level, "signed_by": "participant-key", "decision_sha256": digest,
    }
    assert Challenge.objects.get(nonce=challenge["nonce"]).used_at is not None
    consent = participant.consents.get()
    assert consent.state == ("revoked" if revoked else "granted")
    if revoked:
        # The revocation the withdrawal causes carries the participant's signed withdrawal.
        event = consent.events.get(action="revoke")
        assert (event.signed_by, event.decision_jwt) == ("participant-key", token)
        assert _payload(event.ledger_entry)["decision_sha256"] == digest
        assert _payload(event.ledger_entry)["signed_by"] == "participant-key"
        assert WithdrawalInstruction.objects.filter(withdrawal=withdrawal).count() == 1
    assert ConsentRequest.objects.get().status == "declined"


def test_a_custodial_withdrawal_is_signed_by_the_portal_and_says_so(participant, purposes):
    services.consent_grant(participant=participant, purpose=purposes["general-research"])
    withdrawal = services.participant_withdraw(participant=participant, level="no_use")
    assert withdrawal.signed_by == "portal-custodial-key"
    claims = jwt.claims(withdrawal.decision_jwt)
    assert claims["iss"] == participant.did
    assert claims["decision"]["type"] == "WithdrawalDecision" and claims["decision"]["level"] == "no_use"
    result = didkit_backend.verify_presentation(withdrawal.decision_jwt, challenge=claims["nonce"], domain=claims["aud"])
    assert result["errors"] == []
    digest = hashlib.sha256(withdrawal.decision_jwt.encode()).hexdigest()
    assert _payload(withdrawal.ledger_entry)["signed_by"] == "portal-custodial-key"
    assert _payload(withdrawal.ledger_entry)["decision_sha256"] == digest
    event = participant.consents.get().events.get(action="revoke")
    assert (event.signed_by, event.decision_jwt) == ("portal-custodial-key", withdrawal.decision_jwt)
    assert _payload(event.ledger_entry)["decision_sha256"] == digest


def _withdrawal_refused(participant, level, token, check):
    entries, events = Entry.objects.count(), ConsentEvent.objects.count()
    with pytest.raises(services.ConsentStateError, match=check):
        services.participant_withdraw(participant=participant, level=level, signed_decision=token)
    # Nothing written: no withdrawal, no revocation, no instruction, no ledger entry.
    assert not Withdrawal.objects.exists() and not WithdrawalInstruction.objects.exists()
    assert participant.consents.get().state == "granted"
    assert (Entry.objects.count(), ConsentEvent.objects.count()) == (entries, events)
    assert ConsentRequest.objects.get().status == "open"


def test_an_unsigned_withdrawal_is_refused_for_a_self_held_key(donor):
    participant, _ = donor
    _withdrawal_refused(participant, "no_use", None, "sign this decision")


def test_a_withdrawal_signed_by_another_key_is_refused(donor):
    participant, key = donor
    challenge, _ = withdrawal_signed(participant, key, "no_use")
    forger = BrowserKey()
    _withdrawal_refused(participant, "no_use",
                        forger.present(nonce=challenge["nonce"], decision=challenge["decision"]), r"\(signer\)")
    token = forger.present(nonce=challenge["nonce"], decision=challenge["decision"], did=key.did)
    _withdrawal_refused(participant, "no_use", token, r"\(signature\)")


def test_a_replayed_withdrawal_is_refused(donor):
    participant, key = donor
    _, token = withdrawal_signed(participant, key, "no_contact")
    services.participant_withdraw(participant=participant, level="no_contact", signed_decision=token)
    entries = Entry.objects.count()
    participant.refresh_from_db()
    # Replayed for a level the order still allows, so the spent nonce is what refuses it.
    with pytest.raises(services.ConsentStateError, match=r"\(challenge\).*replay"):
        services.participant_withdraw(participant=participant, level="no_access", signed_decision=token)
    assert Withdrawal.objects.count() == 1 and Entry.objects.count() == entries


def test_a_withdrawal_with_an_altered_level_is_refused(donor):
    participant, key = donor
    challenge, token = withdrawal_signed(participant, key, "no_contact")
    # The signed payload altered to a harsher level than the portal asked to sign.
    altered = {**challenge["decision"], "level": "no_use"}
    _withdrawal_refused(participant, "no_use", key.present(nonce=challenge["nonce"], decision=altered),
                        r"\(payload\)")
    # The untouched signature over "no further contact", applied as "no further use".
    _withdrawal_refused(participant, "no_use", token, r"\(payload\).*another change")


def test_a_withdrawal_for_another_domain_is_refused(donor):
    participant, key = donor
    _, token = withdrawal_signed(participant, key, "no_use", domain="evil.test")
    _withdrawal_refused(participant, "no_use", token, r"\(domain\)")


def test_a_consent_decision_cannot_stand_for_a_withdrawal_or_the_reverse(donor):
    participant, key = donor
    consent = participant.consents.get()
    _, revoke = signed(participant, key, action="revoke", consent_id=consent.pk)
    _withdrawal_refused(participant, "no_use", revoke, r"\(payload\)")
    _, withdraw = withdrawal_signed(participant, key, "no_use")
    with pytest.raises(services.ConsentStateError, match=r"\(payload\)"):
        services.consent_change(participant=participant, consent_id=consent.pk, action="revoke",
                                signed_decision=withdraw)
    assert participant.consents.get().state == "granted"


def test_erasure_by_a_self_held_participant_needs_their_signed_withdrawal(donor):
    participant, key = donor
    with pytest.raises(services.ConsentStateError, match="sign this decision"):
        services.participant_erase(participant=participant)
    assert get_user_model().objects.filter(pk=participant.user_id).exists()
    assert not Withdrawal.objects.exists()
    _, token = withdrawal_signed(participant, key, "no_use")
    services.participant_erase(participant=participant, signed_decision=token)
    withdrawal = Withdrawal.objects.get()
    assert (withdrawal.level, withdrawal.signed_by, withdrawal.decision_jwt) == ("no_use", "participant-key", token)
    assert Participant.objects.get(pk=participant.pk).user is None


def test_the_withdraw_page_signs_through_the_challenge_and_refuses_what_is_unsigned(donor):
    participant, key = donor
    client = Client()
    client.force_login(participant.user)
    page = client.get("/portal/withdraw/").content.decode()
    assert "data-sign-decision" in page and 'data-sign-fields="level"' in page and key.did in page
    assert client.post("/portal/withdraw/challenge", {"level": "everything"}).status_code == 400
    response = client.post("/portal/withdraw/", {"level": "no_use", "confirm": "yes"}, follow=True)
    assert "sign this decision" in response.content.decode()
    assert not Withdrawal.objects.exists() and participant.consents.get().state == "granted"
    challenge = client.post("/portal/withdraw/challenge", {"level": "no_use"}).json()
    assert challenge["domain"] == "testserver" and challenge["decision"]["level"] == "no_use"
    token = key.present(nonce=challenge["nonce"], domain="testserver", decision=challenge["decision"])
    response = client.post("/portal/withdraw/", {"level": "no_use", "confirm": "yes", "signed_decision": token},
                           follow=True)
    assert "is recorded" in response.content.decode()
    assert Withdrawal.objects.get().decision_jwt == token
    assert participant.consents.get().state == "revoked"
