"""Members, member tokens, cosignature submission, remote audit and personal-data refusal."""

import base64
import io
import itertools
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from ledger import cosign, note, services
from ledger.models import Checkpoint, Cosignature, Entry, MemberToken, SeenCheckpoint, WitnessRefusal
from tests.ledger import tamper
from tests.ledger.test_witnesses import append, rewrite_log

pytestmark = pytest.mark.django_db
API = "/api/v1/ledger/"


def assert_error(response, status: int):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["detail"], body
    return body


def witness_key(name="witness.example/w1"):
    private = Ed25519PrivateKey.generate()
    return private, cosign.verifier_key(name, note.public_key_bytes(private))


# -- member tokens --


def test_member_token_is_printed_once_stored_hashed_and_reads_the_log():
    services.member_register(name="Biobank Nord")
    out = io.StringIO()
    call_command("create_member_token", "Biobank Nord", stdout=out)
    token = out.getvalue().strip()
    assert token.startswith("ledger-member-")
    stored = MemberToken.objects.get()
    assert bytes(stored.token_hash) == services.token_hash(token)
    assert token.encode() not in bytes(stored.token_hash)
    client = APIClient()
    assert client.get(API).status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get(API).status_code == 200
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}x")
    assert_error(client.get(API), 401)
    stored.member.active = False
    stored.member.save()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert_error(client.get(API), 401)


def test_member_tokens_do_not_open_the_custodian_api():
    member = services.member_register(name="Biobank Nord")
    _, token = services.member_token_create(member_id=member.id)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/v1/consent-checks").status_code in (401, 403, 405)


def test_custodian_tokens_still_read_the_ledger(custodian_and_token):
    _, token = custodian_and_token
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get(API).status_code == 200


def test_public_ledger_needs_no_token(settings):
    settings.LEDGER_PUBLIC = True
    assert APIClient().get(API).status_code == 200


def test_create_member_command_and_its_errors():
    _, vkey = witness_key()
    out = io.StringIO()
    call_command("create_member", "W1", "--verifier-key", vkey,
                 "--witness-url", "http://127.0.0.1:9/", stdout=out)
    assert "member" in out.getvalue()
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_member", "W1")
    with pytest.raises(CommandError, match="already registered"):
        call_command("create_member", "W2", "--verifier-key", vkey)
    # A log (type 0x01) key is not a cosigner key.
    with pytest.raises(CommandError, match="type 0x04"):
        call_command("create_member", "W3", "--verifier-key", services.ledger_verifier_key())
    with pytest.raises(CommandError, match="no active member"):
        call_command("create_member_token", "nobody")


# -- cosignatures submitted to the log --


@pytest.fixture
def checkpoint():
    append(3)
    services.ledger_seal_pending()
    return Checkpoint.objects.get(size=3)


def body_of(checkpoint):
    return note.split_note(checkpoint.note)[0]


def test_a_registered_witness_submits_a_cosignature(checkpoint):
    private, vkey = witness_key()
    services.member_register(name="W1", verifier_key=vkey)
    line = cosign.cosign(body_of(checkpoint), "witness.example/w1", private, int(time.time()))
    response = APIClient().post(f"{API}cosignatures", {"size": 3, "cosignature": line}, format="json")
    assert response.status_code == 201, response.content
    assert response.json() == {"size": 3, "witness": "W1"}
    assert Cosignature.objects.get().line == line


@pytest.mark.parametrize(
    "payload, status",
    [
        ({"size": 3, "cosignature": "not a signature line"}, 400),
        ({"size": 3, "cosignature": "\u2014 witness.example/w1 !!!"}, 400),
        ({"size": 3, "cosignature": "\u2014 witness.example/w1 AAAA\n\u2014 x AAAA"}, 400),
        ({"size": "three", "cosignature": "x"}, 400),
        ({"size": 3}, 400),
        ({"size": 99, "cosignature": "\u2014 witness.example/w1 AAAA"}, 404),
    ],
)
def test_malformed_cosignatures_are_4xx_and_store_nothing(checkpoint, payload, status):
    _, vkey = witness_key()
    services.member_register(name="W1", verifier_key=vkey)
    assert_error(APIClient().post(f"{API}cosignatures", payload, format="json"), status)
    assert not Cosignature.objects.exists()


def test_cosignatures_from_unknown_keys_or_not_verifying_are_403(checkpoint):
    private, vkey = witness_key()
    services.member_register(name="W1", verifier_key=vkey)
    stranger, _ = witness_key()
    body = body_of(checkpoint)
    unknown = cosign.cosign(body, "witness.example/w1", stranger, 1)
    body = assert_error(APIClient().post(f"{API}cosignatures", {"size": 3, "cosignature": unknown},
                                         format="json"), 403)
    assert "registered witness" in body["detail"]
    # Right key id, wrong message: signed over another checkpoint.
    other = note.checkpoint_body("localhost/consent-portal/ledger", 3, b"\x07" * 32)
    forged = cosign.cosign(other, "witness.example/w1", private, 1)
    assert_error(APIClient().post(f"{API}cosignatures", {"size": 3, "cosignature": forged},
                                  format="json"), 403)
    assert not Cosignature.objects.exists()


def test_a_truncated_cosignature_with_a_known_key_id_is_400(checkpoint):
    private, vkey = witness_key()
    services.member_register(name="W1", verifier_key=vkey)
    line = cosign.cosign(body_of(checkpoint), "witness.example/w1", private, 1)
    name, encoded = line.rstrip("\n").split(" ", 2)[1:]
    short = "\u2014 " + name + " " + base64.b64encode(base64.b64decode(encoded)[:40]).decode()
    assert_error(APIClient().post(f"{API}cosignatures", {"size": 3, "cosignature": short},
                                  format="json"), 400)


# -- read API: bad input is 4xx --


@pytest.mark.parametrize(
    "path",
    ["entries?start=-1", "entries?start=3", "entries?start=0&limit=0", "entries?start=0&limit=1001",
     "entries?start=x", "entries", "proofs/inclusion?index=0&tree_size=4",
     "proofs/consistency?first=1&second=4", "proofs/consistency?first=3&second=2"],
)
def test_out_of_range_reads_are_4xx(checkpoint, path, settings):
    settings.LEDGER_PUBLIC = True
    response = APIClient().get(API + path)
    assert 400 <= response.status_code < 500 and response["Content-Type"] == "application/json"


def test_entries_endpoint_returns_leaf_bytes_in_order(checkpoint, settings):
    settings.LEDGER_PUBLIC = True
    body = APIClient().get(f"{API}entries?start=1&limit=5").json()
    assert body["start"] == 1
    assert [base64.b64decode(x) for x in body["leaves"]] == [
        *tamper.payloads(0)[1:6]
    ]


def test_witnesses_endpoint_and_cosigned_checkpoint(checkpoint, settings):
    settings.LEDGER_PUBLIC = True
    settings.LEDGER_WITNESS_QUORUM = 1
    client = APIClient()
    assert_error(client.get(f"{API}checkpoint/cosigned"), 404)
    private, vkey = witness_key()
    member = services.member_register(name="W1", verifier_key=vkey)
    services.checkpoint_cosignature_add(
        size=3, line=cosign.cosign(body_of(checkpoint), "witness.example/w1", private, 5))
    text = client.get(f"{API}checkpoint/cosigned").content.decode()
    assert [c.name for c in cosign.verify_cosignatures(text, [vkey])] == ["witness.example/w1"]
    WitnessRefusal.objects.create(member=member, size=3, root_hash=b"\x00" * 32, status=422,
                                  detail="not consistent")
    body = client.get(f"{API}witnesses").json()
    assert body["final_size"] == 3 and body["refusals"] == 1
    assert body["recent_refusals"][0]["status"] == 422
    assert body["witnesses"][0]["last_cosigned_size"] == 3


# -- remote audit --


@pytest.fixture
def remote(live_server):
    member = services.member_register(name="Auditor")
    _, token = services.member_token_create(member_id=member.id)
    return f"{live_server.url}{API}", token


def audit(url, token) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("verify_ledger", "--remote", url, "--token", token, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db(transaction=True)
def test_remote_audit_checks_leaves_and_consistency_with_seen_checkpoints(remote):
    url, token = remote
    append(1200)
    services.ledger_seal_pending()
    out, err = audit(url, token)
    assert "remote ledger intact: localhost/consent-portal/ledger at 1200 entries" in out
    assert "none seen before" in out
    assert err.splitlines() == ["verified 1000/1200 entries", "verified 1200/1200 entries"]
    append(5, start=1200)
    services.ledger_seal_pending()
    out, _ = audit(url, token)
    assert "at 1205 entries; consistent with earlier checkpoints: 1200" in out
    assert list(SeenCheckpoint.objects.order_by("size").values_list("size", flat=True)) == [1200, 1205]

    rewrite_log(index=7)
    append(1, start=1205)
    services.ledger_seal_pending()
    with pytest.raises(CommandError, match="not consistent with checkpoint 1200 seen earlier"):
        audit(url, token)


@pytest.mark.django_db(transaction=True)
def test_remote_audit_refuses_leaves_that_do_not_match_the_signed_root(remote):
    url, token = remote
    append(4)
    services.ledger_seal_pending()
    tamper.payload_set(2, b'{"kind":"consent.granted"}')
    with pytest.raises(CommandError, match="do not hash to the signed root"):
        audit(url, token)
    assert not SeenCheckpoint.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("index", [0, 1, 699, 1198, 1199])
def test_remote_audit_names_the_first_leaf_served_differently_from_the_signed_tree(remote, index):
    url, token = remote
    append(1200)
    services.ledger_seal_pending()
    for bad in (index, min(index + 50, 1199)):  # a later bad leaf must not hide the first
        tamper.payload_set(bad, b'{"kind":"consent.granted","x":1}')
    with pytest.raises(CommandError, match=rf"entry {index}: the leaf served is not the one in the signed tree"):
        audit(url, token)


@pytest.mark.django_db(transaction=True)
def test_remote_audit_needs_a_token_and_a_reachable_log(remote):
    url, _ = remote
    with pytest.raises(CommandError, match="HTTP 401"):
        audit(url, "ledger-member-wrong")
    with pytest.raises(CommandError, match="NOT intact"):
        audit("http://127.0.0.1:9/api/v1/ledger/", "x")


# -- personal data never reaches the ledger --

SPELLINGS = [
    lambda k: k,
    lambda k: k.upper(),
    lambda k: k.split("_")[0] + "".join(w.title() for w in k.split("_")[1:]),  # camelCase
    lambda k: k.replace("_", "-"),
    lambda k: k.replace("_", " "),
    lambda k: k.replace("_", "."),
]
PLACES = [
    lambda k: {k: "x"},
    lambda k: {"subject": {k: "x"}},
    lambda k: {"people": [{"participant": "p"}, {k: "x"}]},
]


@pytest.mark.parametrize("key", sorted(services.PERSONAL_DATA_KEYS))
def test_every_personal_data_key_in_every_spelling_and_place_is_refused(key):
    for spell, place in itertools.product(SPELLINGS, PLACES):
        payload = place(spell(key))
        with pytest.raises(ValueError, match="looks like personal data"):
            services.entry_append(kind="consent.granted", payload=payload)
    assert not Entry.objects.exists()


@pytest.mark.parametrize("value", ["ada@example.org", "Contact: A.Lovelace@uni.ac.uk today",
                                   "mailto:ada@example.org", "x" * 5000 + " ada@example.org",
                                   "pid@1@ada@example.org"])
def test_email_like_values_anywhere_are_refused(value):
    for payload in ({"note": value}, {"a": {"b": [value]}}):
        with pytest.raises(ValueError, match="looks like personal data"):
            services.entry_append(kind="consent.granted", payload=payload)
    assert not Entry.objects.exists()
