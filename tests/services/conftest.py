"""Real PostgreSQL, a real Redis broker and a separate `celery worker` process.

These tests run whenever DATABASE_URL points at PostgreSQL and REDIS_URL (or
CELERY_BROKER_URL) at Redis; with CI=true a missing service fails instead of skipping.
"""

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection

from consent_portal.celery import app as celery_app
from consent_portal.duo import duo_terms_load
from consent_portal.models import DuoTerm
from tests.conftest import require_or_skip

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def broker_url() -> str:
    return os.getenv("CELERY_BROKER_URL") or os.getenv("REDIS_URL") or ""


@pytest.fixture
def real_services(transactional_db):
    if connection.vendor != "postgresql":
        require_or_skip("DATABASE_URL does not point at PostgreSQL")
    url = broker_url()
    if not url.startswith("redis"):
        require_or_skip("REDIS_URL does not point at Redis")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        require_or_skip(f"Redis at {url} is not reachable: {exc}")
    # transactional_db empties tables between tests, data migrations included.
    duo_terms_load(DuoTerm)
    return url


def worker_database_url() -> str:
    """DATABASE_URL, but naming the test database pytest-django created."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


@pytest.fixture
def celery_worker_process(real_services, request):
    """A separate `celery worker` process consuming this run's queue from Redis."""
    queue = celery_app.conf.task_default_queue
    # Clear what an earlier, interrupted run may have left on the queue.
    import redis

    redis.Redis.from_url(real_services).delete(queue)
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"worker-{request.node.name}.log"
    log = log_path.open("w")
    env = {**os.environ, "DATABASE_URL": worker_database_url(), "REDIS_URL": real_services}
    env.pop("CELERY_BROKER_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "consent_portal", "worker", "--pool=solo",
         "--queues", queue, "--without-gossip", "--without-mingle", "--without-heartbeat",
         "--loglevel", "INFO", "--hostname", f"test-{os.getpid()}@%h"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while "ready." not in log_path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"celery worker did not start; its log:\n{log_path.read_text()}")
        time.sleep(0.2)
    yield process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def wait_for(predicate, timeout=30.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
