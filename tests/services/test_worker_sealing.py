"""The sealing path on real components: PostgreSQL, Redis, a separate worker process."""

import os
import subprocess
import sys

import pytest

from consent_portal import demo, services
from ledger import selectors as ledger_selectors
from ledger.models import Entry
from tests.services.conftest import ROOT, worker_database_url, wait_for

pytestmark = pytest.mark.services


@pytest.fixture(autouse=True)
def _no_seal_window_from_an_earlier_test(monkeypatch):
    # ledger.tasks remembers when this process last queued a seal; a test that counts
    # queued tasks must not inherit that from the test before it.
    from ledger import tasks

    monkeypatch.setattr(tasks, "_flag_set_at", None)


def pending():
    return Entry.objects.filter(index__isnull=True).count()


def test_a_separate_worker_seals_consent_events_from_the_redis_queue(celery_worker_process):
    demo.purposes_load()
    participant = services.participant_sign_up(username="walter", password="a long test password 1")
    consent = services.consent_grant(
        participant=participant, purpose=services.Purpose.objects.get(slug="general-research")
    )
    services.consent_change(participant=participant, consent_id=consent.pk, action="revoke")

    assert wait_for(lambda: pending() == 0), "the worker did not seal the entries"
    indexes = list(Entry.objects.order_by("index").values_list("index", flat=True))
    assert indexes == list(range(len(indexes))) and len(indexes) == 3
    info = ledger_selectors.ledger_info()
    assert info["size"] == 3
    event = consent.events.get(action="revoke")
    evidence = ledger_selectors.entry_evidence(entry_id=event.ledger_entry_id)
    assert evidence["tree_size"] == 3 and evidence["checkpoint"]
    # The whole log verifies from the database, as an auditor would run it.
    result = subprocess.run(
        [sys.executable, "manage.py", "verify_ledger"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "DATABASE_URL": worker_database_url()},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_with_the_broker_down_nothing_is_lost_and_the_sweep_seals_it(real_services):
    demo.purposes_load()
    # A separate process whose broker is unreachable grants a consent.
    script = (
        "from consent_portal import services; from consent_portal.models import Purpose; "
        "p = services.participant_sign_up(username='xena', password='a long test password 1'); "
        "services.consent_grant(participant=p, purpose=Purpose.objects.get(slug='general-research'))"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "DATABASE_URL": worker_database_url(), "REDIS_URL": "redis://127.0.0.1:1/0"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert pending() == 2  # enrolment and grant: committed, not sealed, not lost

    from ledger.tasks import sweep

    sweep()
    assert pending() == 0


def test_a_burst_of_entries_queues_one_seal_and_that_seal_takes_them_all(real_services):
    import redis
    from django.db import transaction

    from consent_portal.celery import app as celery_app
    from ledger import services as ledger_services
    from ledger import tasks

    queue = celery_app.conf.task_default_queue
    broker = redis.Redis.from_url(real_services)
    broker.delete(queue, tasks._seal_flag())
    for n in range(20):
        with transaction.atomic():  # each commit asks for a seal
            ledger_services.entry_append(kind="test.burst", payload={"n": n})
    # No worker consumes this queue: one task waits there for all twenty entries.
    assert broker.llen(queue) == 1
    assert pending() == 20
    # What a worker runs: the task clears the flag first, then seals everything pending.
    assert tasks.seal_pending() == 20
    assert pending() == 0
    # The flag is gone, so the next entry queues a task of its own.
    with transaction.atomic():
        ledger_services.entry_append(kind="test.burst", payload={"n": 20})
    assert broker.llen(queue) == 2
    broker.delete(queue)


def test_a_process_that_queued_a_seal_asks_redis_nothing_for_half_the_linger(real_services, settings, monkeypatch):
    import redis

    from consent_portal.celery import app as celery_app
    from ledger import tasks

    settings.LEDGER_SEAL_LINGER_MS = 200
    queue = celery_app.conf.task_default_queue
    broker = redis.Redis.from_url(real_services)
    broker.delete(queue, tasks._seal_flag())
    now = [1000.0]
    monkeypatch.setattr(tasks, "_clock", lambda: now[0])
    store = tasks._flag_store()
    sets = []
    real_set = store.set
    monkeypatch.setattr(store, "set", lambda *a, **k: sets.append(a) or real_set(*a, **k))

    tasks.seal_soon()  # sets the flag and queues the task
    assert (len(sets), broker.llen(queue)) == (1, 1)
    now[0] += 0.099  # the task cannot have read yet: no round trip at all
    tasks.seal_soon()
    assert (len(sets), broker.llen(queue)) == (1, 1)
    now[0] += 0.002  # past half the linger: ask Redis again; the flag is still set
    tasks.seal_soon()
    assert (len(sets), broker.llen(queue)) == (2, 1)

    # The task cleared the flag; the next entry queues a task of its own at once.
    broker.delete(tasks._seal_flag())
    tasks.seal_soon()
    assert (len(sets), broker.llen(queue)) == (3, 2)

    # A flag set by another process opens no window here: whether a task will still read
    # is only known for a task this process queued, so every call asks Redis.
    broker.delete(queue, tasks._seal_flag())
    monkeypatch.setattr(tasks, "_flag_set_at", None)
    broker.set(tasks._seal_flag(), 1)
    tasks.seal_soon()
    tasks.seal_soon()
    assert (len(sets), broker.llen(queue)) == (5, 0)
    broker.delete(queue, tasks._seal_flag())
