"""Appending, sealing, the signing key, evidence and tasks, against the real database."""

import base64
import hashlib
import json
import logging

import pytest
from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from jwcrypto import jwe, jwk

from ledger import merkle, note, selectors, services, tasks
from ledger.canonical import canonical_json
from ledger.models import Checkpoint, Entry, EntryOpenings, HashTile, LogKey, TreeState
from tests.ledger import tamper
from tests.ledger.reference import mth

pytestmark = pytest.mark.django_db


def append(n: int, start: int = 0) -> list[Entry]:
    return [
        services.entry_append(kind="consent.granted", payload={"n": f"p-{i}", "seq": i})
        for i in range(start, start + n)
    ]


def b64d(text: str) -> bytes:
    return base64.b64decode(text)


# -- entry_append --


def test_append_stores_canonical_json_with_kind_and_stays_pending():
    entry = services.entry_append(
        kind="consent.granted",
        payload={"purpose": "DUO:0000042", "label": "ø", "n": [1, True, None]},
    )
    entry.refresh_from_db()
    assert (
        bytes(entry.payload)
        == (
            '{"kind":"consent.granted","label":"ø","n":[1,true,null],"purpose":"DUO:0000042"}'
        ).encode()
    )
    assert entry.index is None and entry.sealed_at is None


@pytest.mark.parametrize(
    "payload",
    [
        {"score": 0.5},
        {"nested": {"list": [1, 2.0]}},
        {"when": __import__("datetime").date(2024, 1, 1)},
        {"raw": b"bytes"},
        {"set": {1, 2}},
        {"big": 2**53},
        {1: "non-string key"},
        {"kind": "consent.revoked"},
        {"bad": "\ud800"},
    ],
)
def test_append_refuses_non_canonical_payloads(payload):
    with pytest.raises(ValueError):
        services.entry_append(kind="consent.granted", payload=payload)
    assert not Entry.objects.exists()


def test_append_names_floats_as_the_problem():
    with pytest.raises(ValueError, match=r"payload\.nested\.list\[1\]: floats are not allowed"):
        services.entry_append(kind="consent.granted", payload={"nested": {"list": [1, 2.0]}})


@pytest.mark.parametrize(
    "kind", ["", "Consent.Granted", "consent granted", "consent.", "a" * 65, None]
)
def test_append_refuses_bad_kinds(kind):
    with pytest.raises(ValueError):
        services.entry_append(kind=kind, payload={"n": "p"})
    assert not Entry.objects.exists()


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "Ada"},
        {"first_name": "Ada"},
        {"lastName": "Lovelace"},
        {"E-Mail": "x"},
        {"email": "x"},
        {"phone": "+44"},
        {"address": "1 Street"},
        {"date of birth": "1815-12-10"},
        {"dateOfBirth": "1815-12-10"},
        {"dob": "1815-12-10"},
        {"postcode": "N1"},
        {"donor": {"birth_date": "1815"}},
        {"donors": [{"participant": "p"}, {"surname": "L"}]},
        {"note": "contact ada@example.org"},
    ],
)
def test_append_refuses_personal_data(payload):
    with pytest.raises(ValueError, match="personal data"):
        services.entry_append(kind="consent.granted", payload=payload)
    assert not Entry.objects.exists()


def test_append_commits_to_who_and_keeps_what_in_the_clear():
    entry = services.entry_append(
        kind="consent.check",
        payload={"purpose": "DUO:0000007", "decision": "permit", "kind": "consent.check"},
        committed={"participant": "did:key:z6Mk", "study": "S-1", "sample": "B-7", "custodian": 3},
        subject="pid-1",
    )
    leaf = json.loads(bytes(Entry.objects.get(pk=entry.pk).payload))
    assert leaf["decision"] == "permit" and set(leaf["commit"]) == {"participant", "study", "sample", "custodian"}
    assert b"did:key" not in bytes(Entry.objects.get(pk=entry.pk).payload)
    openings = EntryOpenings.objects.get(entry=entry)
    assert openings.subject == "pid-1" and openings.openings["custodian"]["value"] == 3


def test_commit_enqueues_sealing(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        entry = services.entry_append(kind="consent.granted", payload={"n": "p"})
        assert Entry.objects.get(id=entry.id).index is None
    assert len(callbacks) == 1
    assert Entry.objects.get(id=entry.id).index == 0  # sealed by the (eager) task


def test_rolled_back_append_leaves_nothing(django_capture_on_commit_callbacks):
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        services.entry_append(kind="consent.granted", payload={"n": "p"})
        raise RuntimeError
    assert callbacks == [] and not Entry.objects.exists()


@pytest.fixture
def broker():
    """Switches the Celery app from in-process tasks to a real broker URL for one test."""
    app = current_app._get_current_object()
    saved = (app.conf.task_always_eager, app.conf.broker_url)

    def drop_pools():
        # Celery builds its connection pools lazily from broker_url and caches them.
        app._pool = None
        app.amqp._producer_pool = None

    def use(url: str):
        app.conf.task_always_eager, app.conf.broker_url = False, url
        drop_pools()

    yield use
    app.conf.task_always_eager, app.conf.broker_url = saved
    drop_pools()


def test_unreachable_broker_is_logged_and_the_sweep_seals_later(
    django_capture_on_commit_callbacks, broker, caplog
):
    broker("redis://127.0.0.1:9/0")  # nothing listens on port 9
    with (
        caplog.at_level(logging.WARNING, logger="ledger.tasks"),
        django_capture_on_commit_callbacks(execute=True),
        transaction.atomic(),
    ):
        entry = services.entry_append(kind="consent.granted", payload={"n": "p"})
    assert "the broker did not answer (enqueue); entries stay pending" in caplog.text
    assert Entry.objects.get(id=entry.id).index is None
    assert tasks.sweep.run() == 1
    assert Entry.objects.get(id=entry.id).index == 0


# -- sealing --


def test_sealing_assigns_indexes_in_id_order_and_signs_a_checkpoint():
    entries = append(5)
    before = timezone.now()
    assert services.ledger_seal_pending() == 5
    after = timezone.now()
    sealed = list(Entry.objects.order_by("id"))
    assert [e.index for e in sealed] == [0, 1, 2, 3, 4]
    assert [e.id for e in sealed] == [e.id for e in entries]
    # The payloads moved, unchanged, into their bundle; the leaf hashes are its tile.
    payloads = [bytes(e.payload) for e in entries]
    assert tamper.payloads(0) == payloads
    assert bytes(HashTile.objects.get(level=0, index=0).hashes) == b"".join(
        hashlib.sha256(b"\x00" + p).digest() for p in payloads)
    for e in sealed:
        assert e.payload is None and before <= e.sealed_at <= after
    root = mth(payloads)
    state = TreeState.objects.get()
    assert (state.size, bytes(state.root_hash)) == (5, root)
    checkpoint = Checkpoint.objects.get()
    assert (checkpoint.size, bytes(checkpoint.root_hash)) == (5, root)
    signed = note.open_checkpoint(checkpoint.note, [services.ledger_verifier_key()])
    assert signed == (settings.LEDGER_ORIGIN, 5, root)


def test_sealing_is_idempotent_and_extends_the_tree():
    append(3)
    assert services.ledger_seal_pending() == 3
    assert services.ledger_seal_pending() == 0
    assert Checkpoint.objects.count() == 1
    append(4, start=3)
    assert services.ledger_seal_pending() == 4
    payloads = tamper.payloads(0)
    assert [c.size for c in Checkpoint.objects.order_by("size")] == [3, 7]
    assert bytes(TreeState.objects.get().root_hash) == mth(payloads)
    assert Entry.objects.filter(index__isnull=True).count() == 0


def test_batches_each_get_a_checkpoint_and_fill_bundles_and_tiles():
    payloads = [bytes(e.payload) for e in append(700)]
    assert services.ledger_seal_pending(max_batch=300) == 700
    checkpoints = list(Checkpoint.objects.order_by("size"))
    assert [c.size for c in checkpoints] == [300, 600, 700]
    for c in checkpoints:
        assert bytes(c.root_hash) == mth(payloads[: c.size])
    # Bundles of 256 payloads, the last partial; extended across batches, never rewritten
    # differently.
    assert [tamper.payloads(n) for n in range(3)] == [payloads[:256], payloads[256:512], payloads[512:]]
    tiles = {(t.level, t.index): bytes(t.hashes) for t in HashTile.objects.all()}
    leaves = [merkle.leaf_hash(p) for p in payloads]
    assert tiles == {
        (0, 0): b"".join(leaves[:256]),
        (0, 1): b"".join(leaves[256:512]),
        (0, 2): b"".join(leaves[512:]),
        # Level 8: the two complete subtrees of 256 leaves.
        (1, 0): mth(payloads[:256]) + mth(payloads[256:512]),
    }


def test_proofs_read_subtrees_out_of_the_tiles():
    payloads = [bytes(e.payload) for e in append(700)]
    services.ledger_seal_pending(max_batch=250)
    for level, index in [(0, 5), (3, 2), (7, 1), (8, 0), (8, 1), (9, 0), (4, 40), (2, 174)]:
        expected = mth(payloads[index << level : (index + 1) << level])
        assert selectors.subtree_hashes(pairs=[(level, index)]) == {(level, index): expected}
    # Not complete in a log of 700: absent, not made up.
    assert selectors.subtree_hashes(pairs=[(8, 2), (2, 175), (9, 1)]) == {}


def test_a_payload_that_would_break_its_bundle_is_not_sealed():
    # Only entry_append writes entries, and canonical JSON never holds a raw newline; a row
    # written some other way stops the sequencer, with nothing half-sealed.
    append(3)
    services.ledger_seal_pending()
    Entry.objects.create(payload=b'{"kind":"consent.granted",\n"seq":3}')
    with pytest.raises(RuntimeError, match="cannot seal: a ledger payload holds a raw newline"):
        services.ledger_seal_pending()
    assert Entry.objects.filter(index__isnull=True).count() == 1
    assert TreeState.objects.get().size == 3 and len(tamper.payloads(0)) == 3


def test_sealing_creates_a_missing_tree_state():
    append(1)
    TreeState.objects.all().delete()
    assert services.ledger_seal_pending() == 1
    assert TreeState.objects.get().size == 1


def test_sealing_cost_does_not_grow_with_the_log(django_assert_max_num_queries):
    append(300)
    services.ledger_seal_pending()
    append(1, start=300)
    # Lock, pending rows, frontier, updates, nodes, head, key, checkpoint: not O(n).
    with django_assert_max_num_queries(12):
        assert services.ledger_seal_pending() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_sequencers_never_seal_twice():
    if connection.vendor != "postgresql":
        pytest.skip("row locks between connections need PostgreSQL; SQLite's test DB is in memory")
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    # Rows made directly: in this mode on_commit would seal each one at once.
    Entry.objects.bulk_create(
        Entry(payload=canonical_json({"kind": "consent.granted", "seq": i}))
        for i in range(60)
    )

    def seal():
        try:
            return services.ledger_seal_pending(max_batch=7)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(4) as pool:
        sealed = list(pool.map(lambda _: seal(), range(4)))
    assert sum(sealed) == 60
    assert sorted(Entry.objects.values_list("index", flat=True)) == list(range(60))
    assert services.ledger_verify().ok


# -- the key --


def test_private_key_is_stored_only_as_a_dir_a256gcm_jwe():
    key = services.ledger_key_get_or_create()
    assert services.ledger_key_get_or_create().pk == key.pk
    assert LogKey.objects.count() == 1 and key.name == settings.LEDGER_KEY_NAME
    token = key.encrypted_private_key
    assert token.count(".") == 4
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "dir", "enc": "A256GCM"}
    kek = settings.KEY_ENCRYPTION_KEY
    decrypted = jwe.JWE()
    decrypted.deserialize(token, key=jwk.JWK(kty="oct", k=kek.rstrip("=")))
    private = decrypted.payload
    assert len(private) == 32
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    assert note.public_key_bytes(Ed25519PrivateKey.from_private_bytes(private)) == bytes(
        key.public_key
    )
    for encoding in (
        private.hex(),
        base64.b64encode(private).decode(),
        base64.urlsafe_b64encode(private).decode(),
    ):
        assert encoding.rstrip("=") not in token


def test_wrong_kek_cannot_sign(settings):
    services.ledger_key_get_or_create()
    settings.KEY_ENCRYPTION_KEY = base64.urlsafe_b64encode(b"\x07" * 32).decode()
    append(1)
    with pytest.raises(jwe.InvalidJWEData):
        services.ledger_seal_pending()
    assert not Checkpoint.objects.exists()
    assert Entry.objects.get().index is None  # the whole batch rolled back


def test_a_swapped_private_key_ciphertext_is_refused(settings):
    log_key = services.ledger_key_get_or_create()
    settings.LEDGER_KEY_NAME, name = "other-log", settings.LEDGER_KEY_NAME
    other = services.ledger_key_get_or_create()
    settings.LEDGER_KEY_NAME = name
    # Give the log key another key's (validly encrypted) private half.
    LogKey.objects.filter(pk=log_key.pk).update(encrypted_private_key=other.encrypted_private_key)
    append(1)
    with pytest.raises(ValueError, match="does not match the public key"):
        services.ledger_seal_pending()
    assert not Checkpoint.objects.exists()


# -- evidence and info --


def test_evidence_proves_inclusion_in_the_latest_checkpoint():
    entries = append(6)
    assert selectors.entry_evidence(entry_id=entries[2].id) is None
    services.ledger_seal_pending()
    append(5, start=6)
    services.ledger_seal_pending()
    evidence = selectors.entry_evidence(entry_id=entries[2].id)
    assert evidence["index"] == 2 and evidence["tree_size"] == 11
    assert evidence["origin"] == settings.LEDGER_ORIGIN
    assert evidence["verifier_key"] == services.ledger_verifier_key()
    signed = note.open_checkpoint(evidence["checkpoint"], [evidence["verifier_key"]])
    assert signed.size == 11 and signed.root == b64d(evidence["root_hash"])
    payload = selectors.entry_payload(index=2)
    assert b64d(evidence["leaf_hash"]) == merkle.leaf_hash(payload)
    assert merkle.verify_inclusion(
        index=2,
        tree_size=11,
        leaf_hash=merkle.leaf_hash(payload),
        proof=[b64d(h) for h in evidence["inclusion_proof"]],
        root=signed.root,
    )
    with pytest.raises(Entry.DoesNotExist):
        selectors.entry_evidence(entry_id=10**9)


def test_proofs_take_one_query_and_none_for_tiles_remembered(django_assert_num_queries):
    payloads = [bytes(e.payload) for e in append(45)]
    services.ledger_seal_pending()
    with django_assert_num_queries(1):
        proof = selectors.proof_inclusion(index=37, tree_size=45)
    assert len(proof) == len(merkle.inclusion_ranges(37, 45))
    with django_assert_num_queries(0):  # the same (partial) tile, long enough
        selectors.proof_consistency(first=13, second=45)
    with pytest.raises(LookupError):
        selectors.proof_inclusion(index=3, tree_size=46)
    # The partial tile grows: a remembered copy too short for the newer tree is read again.
    payloads += [bytes(e.payload) for e in append(20, start=45)]
    services.ledger_seal_pending()
    with django_assert_num_queries(1):
        proof = selectors.proof_inclusion(index=60, tree_size=65)
    assert merkle.verify_inclusion(index=60, tree_size=65, leaf_hash=merkle.leaf_hash(payloads[60]),
                                   proof=proof, root=mth(payloads))


def test_info_before_and_after_sealing():
    info = selectors.ledger_info()
    assert info["size"] == 0 and info["pending"] == 0 and info["last_sealed_at"] is None
    assert b64d(info["root_hash"]) == hashlib.sha256(b"").digest()
    assert note.parse_verifier_key(info["verifier_key"]).name == settings.LEDGER_KEY_NAME
    append(3)
    assert selectors.ledger_info()["pending"] == 3
    services.ledger_seal_pending()
    append(1, start=3)
    info = selectors.ledger_info()
    assert info["size"] == 3 and info["pending"] == 1 and info["last_sealed_at"] is not None
    assert b64d(info["root_hash"]) == bytes(selectors.checkpoint_latest().root_hash)


# -- tasks --


def test_tasks_are_registered_late_acked_and_seal():
    assert tasks.sweep.name == "ledger.tasks.sweep"
    assert settings.CELERY_BEAT_SCHEDULE["ledger-sweep"]["task"] == tasks.sweep.name
    for task in (tasks.seal_pending, tasks.sweep):
        assert task.acks_late and task.reject_on_worker_lost
    append(2)
    assert tasks.seal_pending.delay().get() == 2
    assert tasks.sweep.delay().get() == 0
