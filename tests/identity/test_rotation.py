"""Issuer key rotation and the trust configuration."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from identity import selectors, services
from identity.models import IssuerKey, StatusList
from tests.identity.helpers import CONSENT_CLAIMS


def issue(subject):
    return services.credential_issue(
        subject_did=subject.did, credential_type="ConsentCredential", claims=dict(CONSENT_CLAIMS)
    )


def test_rotation_keeps_earlier_credentials_verifying_and_signs_with_the_new_key(subject):
    old = issue(subject)
    out = StringIO()
    call_command("rotate_issuer_key", stdout=out)
    new_key = IssuerKey.objects.get(active=True)
    assert new_key.did != old.issuer_key.did and f"new issuer key {new_key.did}" in out.getvalue()
    assert selectors.credential_verify(document=old.document)["verified"] is True
    new = issue(subject)
    assert new.document["issuer"] == new_key.did
    assert selectors.credential_verify(document=new.document)["verified"] is True
    # The status lists are re-signed by the new key at once.
    for row in StatusList.objects.all():
        assert json.loads(row.credential)["issuer"] == new_key.did


def test_a_distrusted_key_fails_the_issuer_check(subject):
    old = issue(subject)
    call_command("rotate_issuer_key", "--distrust-previous", stdout=StringIO())
    result = selectors.credential_verify(document=old.document)
    assert result["verified"] is False and result["checks"]["issuer_trusted"].startswith("failed")
    call_command("rotate_issuer_key", "--trust", old.issuer_key.did, stdout=StringIO())
    assert selectors.credential_verify(document=old.document)["verified"] is True


def test_the_active_key_cannot_be_distrusted(subject):
    issue(subject)
    with pytest.raises(CommandError, match="active"):
        call_command("rotate_issuer_key", "--distrust", IssuerKey.objects.get(active=True).did)


def test_list_shows_the_trust_configuration(subject):
    issue(subject)
    call_command("rotate_issuer_key", stdout=StringIO())
    out = StringIO()
    call_command("rotate_issuer_key", "--list", stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "active, trusted" in lines[1] and lines[0].split()[1] == "trusted"


def test_a_key_rotated_in_another_process_is_never_used_to_store_a_credential(subject):
    # credential_issue starts signing with the key this process saw active last and checks
    # it against the database meanwhile. Another process's rotation leaves that guess stale.
    issue(subject)
    stale = services._last_issuance
    services.issuer_rotate()
    services._last_issuance = stale  # as if the rotation had happened elsewhere
    new_key = IssuerKey.objects.get(active=True)
    assert stale[0].did != new_key.did
    credential = issue(subject)
    assert credential.document["issuer"] == new_key.did
    assert IssuerKey.objects.get(credentials=credential.pk) == new_key
    assert selectors.credential_verify(document=credential.document)["verified"] is True
    assert services._last_issuance[0].pk == new_key.pk
