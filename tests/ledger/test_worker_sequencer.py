"""The sequencer on real components: PostgreSQL, Redis and `celery worker` processes that
run a task twice, run two at once, or are SIGKILLed in the middle of a batch."""

import os
import signal
import subprocess
import sys
import time

import pytest
from django.db import transaction

from consent_portal.celery import app as celery_app
from ledger import services, tasks
from ledger.models import Checkpoint, Entry, TreeState
from tests.ledger.conftest import ARTIFACTS, ROOT, wait_for, worker_database_url

pytestmark = pytest.mark.services

BATCH = 5


@pytest.fixture
def start_worker(real_services, request, tmp_path):
    """Starts `celery worker` processes on this run's queue; slow=True pauses each batch."""
    import redis

    queue = celery_app.conf.task_default_queue
    redis.Redis.from_url(real_services).delete(queue)
    started = []

    def start(tag: str, *, slow: float = 0.0) -> subprocess.Popen:
        ARTIFACTS.mkdir(exist_ok=True)
        log_path = ARTIFACTS / f"worker-{request.node.name}-{tag}.log"
        log = log_path.open("w")
        env = {**os.environ, "DATABASE_URL": worker_database_url(), "REDIS_URL": real_services,
               "LEDGER_SEAL_BATCH": str(BATCH), "LEDGER_TEST_MARKER": str(tmp_path / "batches"),
               "LEDGER_TEST_SEAL_PAUSE": str(slow)}
        env.pop("CELERY_BROKER_URL", None)
        program = ["tests/ledger/slow_worker.py"] if slow else ["-m", "celery"]
        process = subprocess.Popen(
            [sys.executable, *program, "-A", "consent_portal", "worker", "--pool=solo",
             "--queues", queue, "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--loglevel", "INFO", "--hostname", f"ledger-{tag}-{os.getpid()}@%h"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while "ready." not in log_path.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"celery worker did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
        started.append((process, log))
        return process

    yield start
    for process, log in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


def batches(tmp_path) -> list[tuple[int, int, int, float]]:
    path = tmp_path / "batches"
    if not path.exists():
        return []
    return [(int(p), int(i), int(n), float(t))
            for p, i, n, t in (line.split() for line in path.read_text().splitlines())]


def append(n: int) -> list[int]:
    # One commit (transactional_db: a real one), which enqueues seal_pending on the broker.
    with transaction.atomic():
        return [
            services.entry_append(kind="consent.granted", payload={"n": f"p-{i}"}).id
            for i in range(n)
        ]


def assert_log_is_exactly(ids: list[int]) -> None:
    rows = list(Entry.objects.order_by("index").values_list("index", "id"))
    assert [index for index, _ in rows] == list(range(len(ids))), "an index is skipped or doubled"
    assert [entry_id for _, entry_id in rows] == sorted(ids), "entries were reordered"
    assert TreeState.objects.get().size == len(ids)
    result = subprocess.run(
        [sys.executable, "manage.py", "verify_ledger"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "DATABASE_URL": worker_database_url()}, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_worker_killed_mid_batch_loses_nothing_and_a_restart_finishes(start_worker, tmp_path):
    slow = start_worker("slow", slow=3.0)
    ids = append(3 * BATCH)  # the first commit already enqueues a seal
    # Wait until the second batch has marked its rows but not committed them.
    assert wait_for(lambda: any(i == BATCH for _, i, _, _ in batches(tmp_path)), timeout=60)
    os.kill(slow.pid, signal.SIGKILL)
    slow.wait(timeout=10)
    # PostgreSQL rolls the open batch back when the connection dies: nothing half-sealed.
    assert wait_for(lambda: not Entry.objects.filter(index__gte=BATCH).exists(), timeout=30)
    assert list(Entry.objects.filter(index__isnull=False).order_by("index")
                .values_list("index", flat=True)) == list(range(BATCH))
    assert list(Checkpoint.objects.values_list("size", flat=True)) == [BATCH]

    start_worker("restarted")
    # The killed task's message is unacked (acks_late); the sweep covers it until Redis
    # redelivers it, and running both is harmless.
    tasks.sweep.delay()
    assert wait_for(lambda: not Entry.objects.filter(index__isnull=True).exists(), timeout=60)
    assert_log_is_exactly(ids)
    assert list(Checkpoint.objects.order_by("size").values_list("size", flat=True)) == [
        BATCH, 2 * BATCH, 3 * BATCH]


def test_a_task_delivered_twice_and_two_workers_at_once_never_interleave(start_worker, tmp_path):
    start_worker("a", slow=0.4)
    start_worker("b", slow=0.4)
    ids = append(4 * BATCH)
    # The same message twice (a redelivery) and a sweep, racing on two workers.
    for _ in range(2):
        tasks.seal_pending.apply_async(task_id="same-task-id")
    tasks.sweep.delay()
    assert wait_for(lambda: not Entry.objects.filter(index__isnull=True).exists(), timeout=90)
    time.sleep(1.0)  # let the other worker's late tasks find nothing to do
    assert_log_is_exactly(ids)
    seen = batches(tmp_path)
    # Every batch sealed once, in order...
    assert sorted(i for _, i, _, _ in seen) == [0, 5, 10, 15]
    # ...and no batch started while another still held the lock (each holds it >= 0.4 s).
    starts = sorted(t for _, _, _, t in seen)
    assert all(b - a >= 0.4 for a, b in zip(starts, starts[1:], strict=False))
    assert len({pid for pid, _, _, _ in seen}) == 2, "both workers should have sealed"
