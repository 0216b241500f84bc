import base64
import gzip
import itertools
import json
import threading

import pytest
from django.db import connection, connections

from identity import didkit_backend, selectors, services, statuslist
from identity.models import IssuedCredential, IssuerKey, StatusList
from tests.identity.helpers import CONSENT_CLAIMS

# The example encodedList of the StatusList2021 specification (W3C CCG, section 2.2): an
# empty list of 16 KiB, GZIP-compressed and base64url-encoded.
SPEC_EXAMPLE_ENCODED_LIST = "H4sIAAAAAAAAA-3BMQEAAADCoPVPbQwfoAAAAAAAAAAAAAAAAAAAAIC3AYbSVKsAQAAA"


def independent_decode(encoded_list: str) -> bytes:
    """Decoded by the spec's steps, not through identity.statuslist."""
    return gzip.decompress(base64.urlsafe_b64decode(encoded_list + "=" * (-len(encoded_list) % 4)))


def set_indexes(bits: bytes) -> list[int]:
    return [i for i in range(len(bits) * 8) if bits[i // 8] >> (7 - i % 8) & 1]


def published(purpose: str) -> dict:
    document, _ = selectors.status_list_document(purpose=purpose)
    return document


def published_indexes(purpose: str) -> list[int]:
    return set_indexes(independent_decode(published(purpose)["credentialSubject"]["encodedList"]))


def test_spec_example_decodes_to_an_empty_16kib_list():
    assert statuslist.decode(SPEC_EXAMPLE_ENCODED_LIST) == bytes(16384)
    assert independent_decode(statuslist.encode(statuslist.empty())) == bytes(16384)


def test_bit_zero_is_the_most_significant_bit_of_byte_zero():
    bits = statuslist.set_bit(statuslist.empty(), 0, True)
    assert bits[0] == 0x80 and not any(bits[1:])
    bits = statuslist.set_bit(statuslist.empty(), 9, True)
    assert bits[1] == 0x40
    bits = statuslist.set_bit(statuslist.empty(), statuslist.LIST_BITS - 1, True)
    assert bits[-1] == 0x01
    assert statuslist.get_bit(bits, statuslist.LIST_BITS - 1)
    assert not statuslist.get_bit(
        statuslist.set_bit(bits, statuslist.LIST_BITS - 1, False), statuslist.LIST_BITS - 1
    )
    assert set_indexes(
        independent_decode(statuslist.encode(statuslist.set_bit(statuslist.empty(), 12345, True)))
    ) == [12345]
    with pytest.raises(ValueError):
        statuslist.get_bit(bits, statuslist.LIST_BITS)


def test_issuance_publishes_both_signed_lists(consent_credential, settings):
    issuer = IssuerKey.objects.get(active=True)
    for purpose in ("revocation", "suspension"):
        document = published(purpose)
        url = f"{settings.SITE_URL}/credentials/status/{purpose}"
        assert document["id"] == url
        assert document["type"] == ["VerifiableCredential", "StatusList2021Credential"]
        assert document["@context"] == [
            "https://www.w3.org/2018/credentials/v1",
            "https://w3id.org/vc/status-list/2021/v1",
        ]
        assert document["issuer"] == issuer.did
        subject = document["credentialSubject"]
        assert (subject["id"], subject["type"], subject["statusPurpose"]) == (
            f"{url}#list",
            "StatusList2021",
            purpose,
        )
        bits = independent_decode(subject["encodedList"])
        assert len(bits) * 8 == 131072 and not any(bits)
        result = didkit_backend.verify_credential(document)
        assert result["errors"] == [] and "proof" in result["checks"]


def test_revoke_sets_the_bit_and_re_signs_the_revocation_list(consent_credential):
    index = consent_credential.status_index
    before = published("revocation")
    suspension_before = published("suspension")
    assert services.credential_revoke(credential_id=consent_credential.id) == {
        "revoked": True,
        "suspended": False,
    }
    after = published("revocation")
    assert after["proof"]["jws"] != before["proof"]["jws"]
    assert published_indexes("revocation") == [index]
    assert published("suspension") == suspension_before
    assert didkit_backend.verify_credential(after)["errors"] == []
    assert selectors.credential_status(credential_id=consent_credential.id) == {
        "revoked": True,
        "suspended": False,
    }
    row = StatusList.objects.get(purpose="revocation")
    assert set_indexes(bytes(row.bits)) == [index]
    result = selectors.credential_verify(document=consent_credential.document)
    assert result["checks"]["status"] == "revoked" and result["verified"] is False
    assert result["checks"]["signature"] == "ok"


def test_suspend_and_resume_flip_the_same_index_in_the_suspension_list(consent_credential):
    index = consent_credential.status_index
    revocation_before = published("revocation")
    assert services.credential_suspend(credential_id=consent_credential.id) == {
        "revoked": False,
        "suspended": True,
    }
    assert published_indexes("suspension") == [index]
    assert published("revocation") == revocation_before
    result = selectors.credential_verify(document=consent_credential.document)
    assert result["checks"]["status"] == "suspended" and result["verified"] is False

    assert services.credential_resume(credential_id=consent_credential.id) == {
        "revoked": False,
        "suspended": False,
    }
    assert published_indexes("suspension") == []
    assert selectors.credential_verify(document=consent_credential.document)["verified"] is True


def test_changes_touch_only_their_own_credential(subject, consent_credential):
    other = services.credential_issue(
        subject_did=subject.did, credential_type="ConsentCredential", claims=dict(CONSENT_CLAIMS)
    )
    services.credential_revoke(credential_id=consent_credential.id)
    services.credential_suspend(credential_id=other.id)
    assert published_indexes("revocation") == [consent_credential.status_index]
    assert published_indexes("suspension") == [other.status_index]
    assert selectors.credential_status(credential_id=other.id) == {
        "revoked": False,
        "suspended": True,
    }


def test_revocation_is_final(consent_credential):
    services.credential_suspend(credential_id=consent_credential.id)
    services.credential_revoke(credential_id=consent_credential.id)
    with pytest.raises(services.CredentialStateError):
        services.credential_resume(credential_id=consent_credential.id)
    with pytest.raises(services.CredentialStateError):
        services.credential_suspend(credential_id=consent_credential.id)
    assert isinstance(services.CredentialStateError("x"), ValueError)
    assert selectors.credential_status(credential_id=consent_credential.id)["revoked"] is True
    # Revoking again changes nothing and signs nothing.
    signed = published("revocation")
    services.credential_revoke(credential_id=consent_credential.id)
    assert published("revocation") == signed
    assert (
        selectors.credential_verify(document=consent_credential.document)["checks"]["status"]
        == "revoked"
    )


def test_status_indexes_are_random_and_unique(subject):
    indexes = [
        services.credential_issue(
            subject_did=subject.did, credential_type="EnrolmentCredential", claims={}
        ).status_index
        for _ in range(24)
    ]
    assert len(set(indexes)) == len(indexes)
    assert all(0 <= i < 131072 for i in indexes)
    assert indexes != sorted(indexes)  # not allocated in order (1 in 24! by chance)
    assert max(indexes) - min(indexes) > 131072 // 4  # spread over the list, not a block
    steps = {b - a for a, b in itertools.pairwise(indexes)}
    assert len(steps) > 1  # no fixed stride either


def test_the_allocator_skips_used_indexes(subject, monkeypatch):
    first = services.credential_issue(
        subject_did=subject.did, credential_type="EnrolmentCredential", claims={}
    )
    draws = iter([first.status_index, first.status_index, 4242])
    monkeypatch.setattr(services.secrets, "randbelow", lambda n: next(draws))
    second = services.credential_issue(
        subject_did=subject.did, credential_type="EnrolmentCredential", claims={}
    )
    assert second.status_index == 4242


def test_issuance_draws_again_when_a_concurrent_issuance_took_the_index(subject, monkeypatch):
    first = services.credential_issue(
        subject_did=subject.did, credential_type="EnrolmentCredential", claims={}
    )
    # As if another transaction committed this index between the check and the insert.
    draws = iter([first.status_index, 777])
    monkeypatch.setattr(services, "_random_free_index", lambda *args, **kwargs: next(draws))
    second = services.credential_issue(
        subject_did=subject.did, credential_type="EnrolmentCredential", claims={}
    )
    assert second.status_index == 777
    assert second.document["credentialStatus"]["statusListIndex"] == "777"
    assert IssuedCredential.objects.count() == 2


def test_a_missing_status_list_fails_closed(consent_credential):
    StatusList.objects.filter(purpose="suspension").delete()
    result = selectors.credential_verify(document=consent_credential.document)
    assert result["checks"]["signature"] == "ok"
    assert result["checks"]["status"] == "unknown"
    assert result["verified"] is False
    assert any("suspension status list does not exist" in e for e in result["errors"])


def test_a_tampered_status_list_fails_closed(consent_credential):
    services.credential_revoke(credential_id=consent_credential.id)
    assert (
        selectors.credential_verify(document=consent_credential.document)["checks"]["status"]
        == "revoked"
    )
    # Someone with database access clears the bit in the published list without the key.
    row = StatusList.objects.get(purpose="revocation")
    document = json.loads(row.credential)
    document["credentialSubject"]["encodedList"] = statuslist.encode(statuslist.empty())
    row.credential = json.dumps(document)
    # ... and gives it a matching ETag, so every cache of the old list is bypassed.
    row.etag = selectors._status_list_etag(row.credential)
    row.save()
    result = selectors.credential_verify(document=consent_credential.document)
    assert result["checks"]["status"] == "unknown"
    assert "status list signature failed" in " ".join(result["errors"])
    assert result["verified"] is False


def test_a_status_list_whose_text_does_not_match_its_etag_is_refused(consent_credential):
    services.credential_revoke(credential_id=consent_credential.id)
    assert selectors.credential_verify(document=consent_credential.document)["checks"]["status"] == "revoked"
    row = StatusList.objects.get(purpose="revocation")
    document = json.loads(row.credential)
    document["credentialSubject"]["encodedList"] = statuslist.encode(statuslist.empty())
    row.credential = json.dumps(document)
    row.save()  # the ETag still names the list that was signed
    # A warm cache keeps answering from the list it verified under that ETag: revoked.
    assert selectors.credential_verify(document=consent_credential.document)["checks"]["status"] == "revoked"
    # Read afresh (another process, a restart), the text is checked against the ETag.
    selectors._verified_lists.clear()
    result = selectors.credential_verify(document=consent_credential.document)
    assert result["checks"]["status"] == "unknown"
    assert "revocation status list text does not match its ETag" in " ".join(result["errors"])
    assert result["verified"] is False


def test_a_warm_status_check_is_one_query_and_sees_a_re_signed_list(
    consent_credential, django_assert_num_queries
):
    trusted = selectors.trusted_issuer_dids()
    assert selectors._credential_status(consent_credential.document, trusted) == ("active", None)
    with django_assert_num_queries(1):
        assert selectors._credential_status(consent_credential.document, trusted) == ("active", None)
    services.credential_suspend(credential_id=consent_credential.id)
    assert selectors._credential_status(consent_credential.document, trusted) == ("suspended", None)
    services.credential_resume(credential_id=consent_credential.id)
    assert selectors._credential_status(consent_credential.document, trusted) == ("active", None)


def test_a_status_list_signed_by_an_untrusted_key_fails_closed(consent_credential):
    row = StatusList.objects.get(purpose="suspension")
    document = json.loads(row.credential)
    del document["proof"]
    stranger = didkit_backend.generate_ed25519_jwk()
    document["issuer"] = didkit_backend.did_key_from_jwk(stranger)
    row.credential = json.dumps(
        didkit_backend.issue_credential(
            document, jwk=stranger, verification_method=didkit_backend.verification_method(stranger)
        )
    )
    row.etag = selectors._status_list_etag(row.credential)
    row.save()
    result = selectors.credential_verify(document=consent_credential.document)
    assert result["checks"]["status"] == "unknown"
    assert any("not trusted" in e for e in result["errors"])


def test_a_status_entry_that_is_not_ours_is_unknown(consent_credential):
    from tests.identity.helpers import resign

    for entry in (
        None,
        {
            **consent_credential.document["credentialStatus"],
            "statusListCredential": "https://elsewhere.invalid/list",
        },
        {**consent_credential.document["credentialStatus"], "statusListIndex": "131072"},
    ):
        changes = {"credentialStatus": entry} if entry else {}
        document = resign(consent_credential.document, **changes)
        if entry is None:
            document = resign(
                {k: v for k, v in consent_credential.document.items() if k != "credentialStatus"}
            )
        result = selectors.credential_verify(document=document)
        assert result["checks"]["signature"] == "ok"
        assert result["checks"]["status"] == "unknown", entry
        assert result["verified"] is False


def test_status_changes_lock_the_list_row(consent_credential):
    if not connection.features.has_select_for_update:
        pytest.skip(
            "this database has no SELECT ... FOR UPDATE (SQLite serialises writers instead)"
        )
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        services.credential_suspend(credential_id=consent_credential.id)
    locked = [q["sql"] for q in queries if "FOR UPDATE" in q["sql"]]
    assert any('"identity_statuslist"' in sql for sql in locked)
    assert any('"identity_issuedcredential"' in sql for sql in locked)


@pytest.mark.django_db(transaction=True)
def test_concurrent_revocations_lose_no_bit():
    if connection.vendor == "sqlite":
        # The test database is in-memory SQLite in shared-cache mode, where concurrent
        # writers fail with "table is locked" instead of waiting.
        pytest.skip("needs a database that lets concurrent transactions wait (PostgreSQL)")
    subject = services.did_create()
    credentials = [
        services.credential_issue(
            subject_did=subject.did, credential_type="EnrolmentCredential", claims={}
        )
        for _ in range(6)
    ]
    barrier = threading.Barrier(len(credentials))
    failures = []

    def revoke(credential_id):
        try:
            barrier.wait()
            services.credential_revoke(credential_id=credential_id)
        except Exception as exc:  # reported below
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=revoke, args=(c.id,)) for c in credentials]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert published_indexes("revocation") == sorted(c.status_index for c in credentials)
