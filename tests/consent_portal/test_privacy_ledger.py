"""Issue 14's ledger privacy, end to end: every payload kind the code writes is scanned for
clear identifiers; a member node given every entry cannot link two entries of one
participant, nor tell one custodian's checks from another's; the entitled (participant,
custodian, ethics committee) can still prove what an entry commits to, offline; erasure
leaves the log verifiable and unlinkable."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from consent_portal import services
from consent_portal.models import BulkCheck, ConsentCheck, ConsentEvent, Rejoin, Sample, Withdrawal
from identity.models import DidKey, IssuedCredential
from ledger import blinding
from ledger import services as ledger_services
from ledger.keys import ledger_verifier_key
from ledger.models import Entry, EntryOpenings
from tests.identity.test_signed_decisions import BrowserKey, register
from tests.ledger import read

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "consent_portal", ROOT / "identity", ROOT / "ledger"]

# What an entry may say in the clear: closed vocabularies (kinds, actions, states, levels,
# decisions, reason codes, DUO terms, purposes of the catalogue), times, counts and digests.
# A new clear field must be added here on purpose, after asking whether it says who.
CLEAR_FIELDS = {
    "kind", "type", "at", "action", "state", "purpose", "permission", "signed_by", "custody",
    "decision", "reasons", "count", "permits", "results_sha256", "level", "ended_level", "commit",
}


def post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def kinds_in_code() -> set[str]:
    """Every entry kind the application code can write (entry_append's kind= literals, and
    consent.<action> for each consent action)."""
    kinds = set()
    for source in SOURCES:
        for path in source.rglob("*.py"):
            if "migrations" in path.parts:
                continue
            kinds |= set(re.findall(r'\bkind="([a-z_]+\.[a-z_.]+)"', path.read_text()))
    kinds.discard("consent.event")
    return kinds | {f"consent.{action}" for action, _ in ConsentEvent.ACTIONS}


@pytest.fixture
def world(make_participant, purposes, approved_study, django_capture_on_commit_callbacks):
    """Two custodians, three participants, and every kind of entry the portal writes."""
    a, a_token = services.custodian_create(name="Custodian A")
    b, b_token = services.custodian_create(name="Custodian B")
    api_a = Client(HTTP_AUTHORIZATION=f"Bearer {a_token}")
    api_b = Client(HTTP_AUTHORIZATION=f"Bearer {b_token}")
    people = [make_participant(f"person{i}") for i in range(3)]
    samples = {}
    for i, person in enumerate(people):
        for custodian, api in ((a, api_a), (b, api_b)):
            code = services.donation_code_create(participant=person)
            reference = post(api, "/api/v1/enrolments", {"code": code}).json()["participant"]
            identifier = f"{custodian.name[-1]}-{i}"
            assert post(api, "/api/v1/samples",
                        {"sample": identifier, "participant": reference, "kind": "blood"}).status_code == 201
            samples[(custodian.pk, i)] = identifier
        consent = services.consent_grant(participant=person, purpose=purposes["health-medical-research"])
        services.consent_change(participant=person, consent_id=consent.pk, action="suspend")
        services.consent_change(participant=person, consent_id=consent.pk, action="resume")
        services.consent_grant(participant=person, purpose=purposes["general-research"])
    ledger_services.ledger_seal_pending()  # so the checks' evidence carries sealed receipts
    question = {"study": "hmb-study", "purpose": "DUO:0000006"}
    answers = {a.pk: [], b.pk: []}
    for i in range(3):
        for custodian, api in ((a, api_a), (b, api_b)):
            answers[custodian.pk].append(
                post(api, "/api/v1/consent-checks", {**question, "sample": samples[(custodian.pk, i)]}).json())
    for custodian, api in ((a, api_a), (b, api_b)):
        bulk = post(api, "/api/v1/consent-checks/bulk",
                    {**question, "samples": [samples[(custodian.pk, i)] for i in range(3)]})
        assert bulk.status_code == 200
    # Person 0 holds their own key; person 1 withdraws, the custodians confirm, and rejoins.
    register(people[0], BrowserKey())
    with django_capture_on_commit_callbacks(execute=True):
        services.participant_withdraw(participant=people[1], level=Withdrawal.NO_USE)
    for custodian, api in ((a, api_a), (b, api_b)):
        for instruction in api.get("/api/v1/withdrawals").json()["instructions"]:
            assert api.post(f"/api/v1/withdrawals/{instruction['id']}/confirm").status_code == 200
    services.participant_rejoin(participant=people[1])
    services.consent_change(participant=people[2], consent_id=people[2].consents.first().pk, action="revoke")
    ledger_services.ledger_seal_pending()
    # Fresh answers, now that every entry is sealed: what a custodian saves.
    for custodian, api in ((a, api_a), (b, api_b)):
        answers[custodian.pk] = [api.get(f"/api/v1/consent-checks/{answer['check']}").json()
                                 for answer in answers[custodian.pk]]
    return {"a": a, "b": b, "api_a": api_a, "api_b": api_b, "people": people, "samples": samples,
            "answers": answers}


def leaves() -> list[tuple[Entry, bytes]]:
    return [(entry, bytes(read.entry_bytes(entry_id=entry.id))) for entry in Entry.objects.order_by("id")]


def who_values(world) -> set[str]:
    """Every value that says who: none may appear in any leaf."""
    values = set()
    for person in world["people"]:
        person.refresh_from_db()
        values |= {str(person.pseudonym), person.user.username}
    values |= set(DidKey.objects.values_list("did", flat=True))
    values |= set(IssuedCredential.objects.values_list("id", flat=True))
    for sample in Sample.objects.all():
        values |= {sample.identifier, str(sample.id)}
    values |= {str(pk) for pk in ConsentCheck.objects.values_list("id", flat=True)}
    values |= {str(pk) for pk in BulkCheck.objects.values_list("id", flat=True)}
    values |= {str(pk) for pk in Withdrawal.objects.values_list("id", flat=True)}
    values |= {str(pk) for pk in Rejoin.objects.values_list("id", flat=True)}
    values |= set(world["a"].enrolments.values_list("reference", flat=True))
    values |= set(world["b"].enrolments.values_list("reference", flat=True))
    values |= {"Custodian A", "Custodian B", "hmb-study"}
    return values


def test_every_payload_kind_is_written_and_none_says_who(world):
    written = set()
    values = who_values(world)
    for entry, leaf in leaves():
        payload = json.loads(leaf)
        written.add(payload["kind"])
        text = leaf.decode()
        leaked = sorted(v for v in values if v in text)
        assert not leaked, f"{payload['kind']} carries {leaked} in the clear"
        assert set(payload) <= CLEAR_FIELDS, f"{payload['kind']} has clear fields {set(payload) - CLEAR_FIELDS}"
        assert blinding.clear_identifier({k: v for k, v in payload.items() if k != "commit"}) is None
    # The flow above reaches every kind the code can write, so each was scanned.
    assert kinds_in_code() <= written, f"not exercised: {kinds_in_code() - written}"
    # And every kind that says who commits to it.
    for entry, leaf in leaves():
        payload = json.loads(leaf)
        if payload["kind"] != "consent.bulk_check":
            assert {"participant", "check", "sample"} & set(payload["commit"]), payload["kind"]


def test_a_member_node_given_every_entry_links_none(world, settings):
    settings.LEDGER_PUBLIC = True
    public = Client()
    size = Entry.objects.filter(index__isnull=False).count()
    served = [public.get(f"/api/v1/ledger/entries/{i}").content for i in range(size)]
    assert served == [leaf for _, leaf in leaves()]
    # No commitment, nor any other 64-hex value (a digest), appears in two entries: fresh
    # salts per field per entry leave nothing two entries of one participant or custodian
    # share, and a signed decision behind several entries (a withdrawal revoking every
    # consent) is committed to, not hashed in the clear.
    seen: dict[str, int] = {}
    for index, leaf in enumerate(served):
        payload = json.loads(leaf)
        digests = [v for v in payload.values() if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)]
        for value in [*payload["commit"].values(), *digests]:
            assert value not in seen, f"entries #{seen[value]} and #{index} share {value}"
            seen[value] = index
    # Knowing a custodian's number and every salt it was ever handed does not let it find
    # its own (let alone another's) checks among the entries: each salt opens one entry.
    a = world["a"]
    salts = [answer["ledger"]["openings"]["custodian"]["salt"] for answer in world["answers"][a.pk]]
    for index, leaf in enumerate(served):
        commit = json.loads(leaf)["commit"]
        if "custodian" not in commit:
            continue
        matching = [salt for salt in salts if blinding.commitment("custodian", a.pk, salt) == commit["custodian"]]
        assert len(matching) <= 1


def test_a_custodian_reads_its_own_checks_and_receipts_and_no_one_elses(world):
    a, b, api_a = world["a"], world["b"], world["api_a"]
    assert api_a.get("/api/v1/ledger/entries?start=0&limit=1000").status_code == 403
    for answer in world["answers"][b.pk]:
        response = api_a.get(f"/api/v1/consent-checks/{answer['check']}")
        assert response.status_code == 404 and response.json()["error"]
    for answer in world["answers"][a.pk]:
        openings = answer["ledger"]["openings"]
        # Its own check's openings: what it sent and holds, nothing of the participant.
        assert openings["custodian"]["value"] == a.pk and openings["check"]["value"] == answer["check"]
        assert set(openings) <= {"check", "custodian", "sample", "study", "credential"}
        assert "participant" not in openings and "did" not in json.dumps(answer["evidence"])
        consent = answer["evidence"]["consent"]
        if consent is not None:
            assert set(consent["latest_event"]["ledger"]["openings"]) == {"credential"}
    for person in world["people"]:
        assert person.did not in json.dumps(world["answers"][a.pk])


def run_verify(tmp_path, document, *args):
    path = tmp_path / "answer.json"
    path.write_text(json.dumps(document))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "DATABASE", "REDIS", "CELERY"))}
    return subprocess.run([sys.executable, "-m", "ledger.verify", "--log-key", ledger_verifier_key(), str(path),
                           *args], env=env, cwd=ROOT, capture_output=True, text=True)


def test_a_custodian_proves_its_saved_answer_offline_and_a_swapped_one_fails(world, tmp_path):
    a = world["a"]
    permit = next(x for x in world["answers"][a.pk] if x["decision"] == "permit")
    result = run_verify(tmp_path, permit)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"custodian {a.pk}" in result.stdout and "VALID: consent event" in result.stdout
    # Another of its answers' receipt under this answer: the openings name another check.
    other = next(x for x in world["answers"][a.pk] if x["check"] != permit["check"])
    forged = {**permit, "ledger": other["ledger"]}
    result = run_verify(tmp_path, forged)
    assert result.returncode == 1 and "INVALID: check: the receipt is of another entry" in result.stderr
    # An opening altered to claim another sample does not open the commitment.
    tampered = json.loads(json.dumps(permit))
    tampered["ledger"]["openings"]["sample"]["value"] = "B-0"
    tampered["evidence"]["sample"] = "B-0"
    result = run_verify(tmp_path, tampered)
    assert result.returncode == 1 and "does not open" in result.stderr


def test_the_participant_and_the_committee_prove_entries_are_whose(world, tmp_path, ethics_member):
    person = world["people"][2]
    client = Client()
    client.force_login(person.user)
    event = ConsentEvent.objects.filter(consent__participant=person).first()
    receipt = client.get(f"/portal/history/{event.pk}/receipt.json")
    assert receipt.status_code == 200
    result = run_verify(tmp_path, json.loads(receipt.content))
    assert result.returncode == 0 and f"participant {person.pseudonym}" in result.stdout
    # Not another participant's decision.
    other = ConsentEvent.objects.exclude(consent__participant=person).first()
    assert client.get(f"/portal/history/{other.pk}/receipt.json").status_code == 404
    history = client.get("/portal/history/").content.decode()
    assert f"/portal/history/{event.pk}/receipt.json" in history
    # The committee opens any entry, a custodian's check included; a participant cannot.
    check = ConsentCheck.objects.filter(custodian=world["b"]).first()
    index = check.ledger_entry.index
    assert client.get(f"/ethics/entries/{index}/receipt.json").status_code == 403
    committee = Client()
    committee.force_login(ethics_member)
    opened = committee.get(f"/ethics/entries/{index}/receipt.json")
    result = run_verify(tmp_path, json.loads(opened.content))
    assert result.returncode == 0 and f"custodian {world['b'].pk}" in result.stdout
    assert committee.get("/ethics/entries/99999/receipt.json").status_code == 404


def test_erasure_leaves_the_log_verifiable_and_unlinkable(world, tmp_path, django_capture_on_commit_callbacks):
    person = world["people"][2]
    pseudonym = str(person.pseudonym)
    mine = [e for e in Entry.objects.all() if read.opened(e).get("participant") == pseudonym]
    assert len(mine) >= 5
    with django_capture_on_commit_callbacks(execute=True):
        services.participant_erase(participant=person)
    ledger_services.ledger_seal_pending()
    assert ledger_services.ledger_verify().ok
    assert not EntryOpenings.objects.filter(subject=pseudonym).exists()
    assert not any(read.opened(e).get("participant") == pseudonym for e in Entry.objects.all())
    # The receipt of an erased participant's entry still verifies; it proves nothing of whom.
    from ledger.selectors import entry_receipt

    receipt = entry_receipt(entry_id=mine[0].id)
    result = run_verify(tmp_path, receipt)
    assert result.returncode == 0 and "commits to" not in result.stdout
    # A custodian's own checks stay provable to it; the copies of the participant's consent
    # event openings their stored evidence held are gone.
    samples = set(Sample.objects.filter(participant=person).values_list("identifier", flat=True))
    for answer in world["answers"][world["a"].pk]:
        again = world["api_a"].get(f"/api/v1/consent-checks/{answer['check']}").json()
        assert again["ledger"]["openings"]["custodian"]["value"] == world["a"].pk
        if again["evidence"]["sample"] in samples and again["evidence"]["consent"]:
            assert "openings" not in again["evidence"]["consent"]["latest_event"]["ledger"]
    # The custodians confirm the destruction the erasure asked for, afterwards: those
    # entries are not openable either.
    for api in (world["api_a"], world["api_b"]):
        for instruction in api.get("/api/v1/withdrawals").json()["instructions"]:
            if instruction["status"] == "open":
                assert api.post(f"/api/v1/withdrawals/{instruction['id']}/confirm").status_code == 200
    assert not EntryOpenings.objects.filter(subject=pseudonym).exists()
    assert not any(read.opened(e).get("participant") == pseudonym for e in Entry.objects.all())
