"""The broker hung (SIGSTOP) and stopped under load, on real processes: a Redis of the
test's own, a gunicorn web process and a Celery worker on it, PostgreSQL. No request fails
or waits on the broker; nothing is lost; everything is sealed once the broker is back.
Latency figures are printed (and written to test-artifacts/broker-faults.json), not
asserted: they are measurements, not a test of the machine's speed."""

import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import pytest

from consent_portal import services
from consent_portal.models import ConsentCheck
from ledger.models import Entry
from tests.services.conftest import ARTIFACTS, ROOT, wait_for, worker_database_url
from tests.services.test_web_process import free_port

pytestmark = pytest.mark.services


@pytest.fixture
def private_redis(real_services):
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: _ping(port), timeout=10), "private redis did not start"
    yield process, port
    try:
        process.send_signal(signal.SIGCONT)
    except ProcessLookupError:
        pass
    process.kill()
    process.wait()


def _ping(port: int) -> bool:
    import redis

    try:
        return redis.Redis(port=port, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return False


def _start(args: list[str], env: dict, name: str):
    ARTIFACTS.mkdir(exist_ok=True)
    log = (ARTIFACTS / f"{name}.log").open("w")
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
def stack(private_redis, transactional_db):
    redis_process, redis_port = private_redis
    queue = f"faults-{os.getpid()}"
    env = {**os.environ, "DATABASE_URL": worker_database_url(), "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "CELERY_QUEUE": queue, "DEBUG": "true", "LEDGER_SEAL_LINGER_MS": "20"}
    env.pop("CELERY_BROKER_URL", None)
    web_port = free_port()
    web = _start([sys.executable, "-m", "gunicorn", "consent_portal.wsgi", "-b", f"127.0.0.1:{web_port}",
                  "-w", "1", "--timeout", "120"], env, "faults-web")
    worker = _start([sys.executable, "-m", "celery", "-A", "consent_portal", "worker", "--pool=solo",
                     "--queues", queue, "--without-gossip", "--without-mingle", "--without-heartbeat",
                     "--loglevel", "INFO", "--hostname", f"faults-{os.getpid()}@%h"], env, "faults-worker")
    assert wait_for(lambda: _up(web_port), timeout=30), "gunicorn did not start"
    yield {"redis": redis_process, "redis_port": redis_port, "web_port": web_port, "env": env}
    for process in (web, worker):
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _up(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/login/")
        return conn.getresponse().status == 200
    except OSError:
        return False


def _checks(port: int, token: str, n: int) -> tuple[list[int], list[float]]:
    statuses, seconds = [], []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=180)
    for i in range(n):
        body = json.dumps({"sample": f"S-{i}", "study": "no-study", "purpose": "DUO:0000006"})
        started = time.perf_counter()
        conn.request("POST", "/api/v1/consent-checks", body=body,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        seconds.append(time.perf_counter() - started)
        statuses.append(response.status)
    return statuses, seconds


def _figures(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1)}


def _pending() -> int:
    return Entry.objects.filter(index__isnull=True).count()


def test_a_hung_or_stopped_broker_costs_no_request_and_loses_nothing(stack):
    from ledger import tasks

    _, token = services.custodian_create(name="Faults lab")
    port = stack["web_port"]
    figures = {}
    statuses, seconds = _checks(port, token, 18)
    assert set(statuses) == {404}
    figures["broker up"] = _figures(seconds)
    assert wait_for(lambda: _pending() == 0, timeout=30), "the worker did not seal the baseline"

    # Hung: the process exists, its socket accepts, it answers nothing.
    stack["redis"].send_signal(signal.SIGSTOP)
    statuses, seconds = _checks(port, token, 18)
    figures["broker hung"] = _figures(seconds)
    assert set(statuses) == {404}, statuses  # every check answered, none a 5xx
    assert ConsentCheck.objects.count() == 36 and _pending() == 18  # recorded, waiting to be sealed
    stack["redis"].send_signal(signal.SIGCONT)
    time.sleep(tasks.BROKER_PAUSE_SECONDS)  # the web process tries the broker again after its pause
    statuses, _ = _checks(port, token, 1)
    assert wait_for(lambda: _pending() == 0, timeout=30), "not sealed after the broker came back"

    # Stopped: connections refused.
    stack["redis"].kill()
    stack["redis"].wait()
    statuses, seconds = _checks(port, token, 18)
    figures["broker stopped"] = _figures(seconds)
    assert set(statuses) == {404}, statuses
    restarted = subprocess.Popen(["redis-server", "--port", str(stack["redis_port"]), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _ping(stack["redis_port"]), timeout=10)
        time.sleep(tasks.BROKER_PAUSE_SECONDS)
        _checks(port, token, 1)
        # The worker reconnects by itself; the queued seal takes everything still pending.
        assert wait_for(lambda: _pending() == 0, timeout=60), "not sealed after the broker restarted"
    finally:
        restarted.kill()
        restarted.wait()
    assert ConsentCheck.objects.count() == 56
    indexes = sorted(Entry.objects.values_list("index", flat=True))
    assert indexes == list(range(len(indexes)))  # none lost, none sealed twice
    (ARTIFACTS / "broker-faults.json").write_text(json.dumps(figures, indent=2))
    print("\nbroker faults, 18 checks each:", json.dumps(figures))
