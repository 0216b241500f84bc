"""The ledger's read API: happy paths, every 4xx, permissions and the OpenAPI schema."""

import base64
import json

import pytest
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.test import APIClient

from ledger import merkle, note, services
from ledger.models import Checkpoint, Member
from tests.ledger import tamper

# Mounted as the project mounts it, without depending on the rest of the project's URLs.
urlpatterns = [
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/ledger/", include("ledger.urls")),
]
# An index past a bigint matches no route: the project's JSON 404 answers it.
handler404 = "consent_portal.errors.page_not_found"
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]
API = "/api/v1/ledger/"


@pytest.fixture
def client(db):
    """A consortium member node: it may read everything the read API serves."""
    api = APIClient()
    api.force_authenticate(token=Member.objects.create(name="Member node"))
    return api


@pytest.fixture
def custodian_client():
    """A custodian's token: checkpoints, proofs and hash tiles, not the entries."""
    api = APIClient()
    api.force_authenticate(token="custodian-token")
    return api


@pytest.fixture
def sealed():
    for i in range(11):
        services.entry_append(kind="consent.granted", payload={"n": f"p-{i}"})
    services.ledger_seal_pending(max_batch=6)  # checkpoints at 6 and 11
    services.entry_append(kind="consent.check", payload={"n": "p-0"})  # stays pending
    return 11


def b64d(text: str) -> bytes:
    return base64.b64decode(text)


def assert_error(response, status: int, field: str | None = None):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) >= {"error", "detail"} and body["detail"]
    if field:
        assert body["error"] == "invalid" and field in body["fields"], body
    return body


def test_info(client, sealed):
    response = client.get(API)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "origin", "size", "root_hash", "verifier_key", "last_sealed_at", "pending", "witnesses"
    }
    assert body["size"] == 11 and body["pending"] == 1 and body["last_sealed_at"]
    assert body["verifier_key"] == services.ledger_verifier_key()


def test_checkpoint_is_the_signed_note_as_text(client, sealed):
    response = client.get(API + "checkpoint")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    text = response.content.decode()
    info = client.get(API).json()
    assert note.open_checkpoint(text, [info["verifier_key"]]) == (
        info["origin"],
        11,
        b64d(info["root_hash"]),
    )


def test_no_checkpoint_yet_is_a_json_404_even_when_text_is_asked_for(client):
    assert_error(client.get(API + "checkpoint", HTTP_ACCEPT="text/plain"), 404)


def test_entry_is_exactly_the_stored_leaf_bytes(client, sealed):
    response = client.get(API + "entries/3")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    stored = tamper.payload_of(3)
    assert response.content == stored
    assert json.loads(response.content)["n"] == "p-3"


@pytest.mark.parametrize("index", [11, 12, 10**30])
def test_entry_out_of_range_or_pending_is_404(client, sealed, index):
    assert_error(client.get(API + f"entries/{index}"), 404)


def test_inclusion_proof_verifies_against_the_checkpoint(client, sealed):
    root = b64d(client.get(API).json()["root_hash"])
    for index in range(11):
        response = client.get(API + "proofs/inclusion", {"index": index, "tree_size": 11})
        assert response.status_code == 200
        body = response.json()
        assert (body["index"], body["tree_size"]) == (index, 11)
        leaf = merkle.leaf_hash(client.get(API + f"entries/{index}").content)
        assert b64d(body["leaf_hash"]) == leaf
        assert merkle.verify_inclusion(
            index=index,
            tree_size=11,
            leaf_hash=leaf,
            proof=[b64d(h) for h in body["hashes"]],
            root=root,
        )


def test_inclusion_proof_in_an_older_tree(client, sealed):
    body = client.get(API + "proofs/inclusion", {"index": 2, "tree_size": 6}).json()
    root = bytes(Checkpoint.objects.get(size=6).root_hash)
    proof = [b64d(h) for h in body["hashes"]]
    assert merkle.verify_inclusion(
        index=2, tree_size=6, leaf_hash=b64d(body["leaf_hash"]), proof=proof, root=root
    )


@pytest.mark.parametrize(
    "params, field",
    [
        ({"tree_size": 11}, "index"),
        ({"index": 1}, "tree_size"),
        ({"index": "x", "tree_size": 11}, "index"),
        ({"index": 1, "tree_size": "1e3"}, "tree_size"),
        ({"index": -1, "tree_size": 11}, "index"),
        ({"index": 0, "tree_size": 0}, "tree_size"),
        ({"index": 11, "tree_size": 11}, "index"),
        ({"index": 0, "tree_size": 12}, "tree_size"),
        ({"index": 0, "tree_size": 10**30}, "tree_size"),
    ],
)
def test_inclusion_proof_bad_params_are_400(client, sealed, params, field):
    assert_error(client.get(API + "proofs/inclusion", params), 400, field)


def test_consistency_proof_verifies_between_checkpoints(client, sealed):
    roots = {c.size: bytes(c.root_hash) for c in Checkpoint.objects.all()}
    body = client.get(API + "proofs/consistency", {"first": 6, "second": 11}).json()
    assert (body["first"], body["second"]) == (6, 11)
    assert merkle.verify_consistency(
        first=6,
        second=11,
        first_root=roots[6],
        second_root=roots[11],
        proof=[b64d(h) for h in body["hashes"]],
    )
    assert (
        client.get(API + "proofs/consistency", {"first": 11, "second": 11}).json()["hashes"] == []
    )


@pytest.mark.parametrize(
    "params, field",
    [
        ({"second": 11}, "first"),
        ({"first": 1}, "second"),
        ({"first": 0, "second": 11}, "first"),
        ({"first": 7, "second": 6}, "first"),
        ({"first": 1, "second": 12}, "second"),
        ({"first": "one", "second": 11}, "first"),
    ],
)
def test_consistency_proof_bad_params_are_400(client, sealed, params, field):
    assert_error(client.get(API + "proofs/consistency", params), 400, field)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "checkpoint",
        "entries/0",
        "proofs/inclusion?index=0&tree_size=1",
        "proofs/consistency?first=1&second=1",
    ],
)
def test_reads_need_credentials_unless_the_ledger_is_public(sealed, settings, url):
    anonymous = APIClient()
    assert_error(anonymous.get(API + url), 401)
    settings.LEDGER_PUBLIC = True
    assert anonymous.get(API + url).status_code == 200


def test_schema_documents_the_ledger_api(client):
    response = APIClient().get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    for url in ["", "checkpoint", "entries/{index}", "proofs/inclusion", "proofs/consistency"]:
        assert API + url in paths, url
    inclusion = paths[API + "proofs/inclusion"]["get"]
    assert {p["name"] for p in inclusion["parameters"] if p["required"]} == {"index", "tree_size"}
    assert {"200", "400", "404"} <= set(inclusion["responses"])
    assert "text/plain" in paths[API + "checkpoint"]["get"]["responses"]["200"]["content"]
    operations = {paths[API + url]["get"]["operationId"] for url in ["", "entries/{index}"]}
    assert operations == {"ledger_info", "ledger_entry"}


def test_a_custodian_reads_proofs_and_checkpoints_but_no_entries(custodian_client, sealed, settings):
    for path in ("", "checkpoint", "proofs/inclusion?index=0&tree_size=11", "tile/0/000.p/11"):
        assert custodian_client.get(API + path).status_code == 200, path
    for path in ("entries/0", "entries?start=0", "tile/entries/000.p/11"):
        body = assert_error(custodian_client.get(API + path), 403)
        assert "consortium member nodes" in body["detail"]
    # A public log is public to everyone.
    settings.LEDGER_PUBLIC = True
    assert custodian_client.get(API + "entries/0").status_code == 200
