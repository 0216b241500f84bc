"""Shared by the ledger tests: witness processes and real Celery workers.

The services fixtures come from tests/services/conftest.py (imported, not copied), so a
missing PostgreSQL or Redis is a skip on a laptop and a failure when CI=true.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services.conftest import (  # noqa: F401 (fixtures)
    ARTIFACTS,
    ROOT,
    real_services,
    wait_for,
    worker_database_url,
)


class WitnessProcess:
    def __init__(self, process: subprocess.Popen, verifier_key: str, url: str, log_path: Path):
        self.process, self.verifier_key, self.url, self.log_path = (
            process, verifier_key, url, log_path
        )

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def start_witness(tmp_path, request):
    """Starts `manage.py run_witness` processes on loopback, each with its own SQLite state."""
    started: list[WitnessProcess] = []

    def start(name: str, log_keys: list[str], *, state: Path | None = None,
              key_file: Path | None = None) -> WitnessProcess:
        ARTIFACTS.mkdir(exist_ok=True)
        slug = name.replace("/", "_")
        log_path = ARTIFACTS / f"witness-{request.node.name}-{slug}.log"
        args = [sys.executable, "manage.py", "run_witness", "--name", name,
                "--key-file", str(key_file or tmp_path / f"{slug}.key"),
                "--state", str(state or tmp_path / f"{slug}.sqlite3"), "--listen", "127.0.0.1:0"]
        for vkey in log_keys:
            args += ["--log", vkey]
        log = log_path.open("w")
        process = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 30
        while True:
            text = log_path.read_text()
            if "listening on " in text:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"run_witness did not start:\n{text}")
            time.sleep(0.1)
        vkey = text.split("verifier key ", 1)[1].split("\n", 1)[0].strip()
        url = text.split("listening on ", 1)[1].split("\n", 1)[0].strip()
        witness = WitnessProcess(process, vkey, url.removesuffix("/add-checkpoint"), log_path)
        started.append(witness)
        return witness

    yield start
    for witness in started:
        witness.stop()


@pytest.fixture
def consortium(start_witness, settings, db):
    """Two witness processes registered as members, quorum 2: (witnesses, members)."""
    from ledger import services

    settings.LEDGER_WITNESS_QUORUM = 2
    log_key = services.ledger_verifier_key()
    witnesses = [start_witness(f"witness.example/w{i}", [log_key]) for i in (1, 2)]
    members = [
        services.member_register(name=f"Biobank {i}", verifier_key=w.verifier_key, witness_url=w.url)
        for i, w in zip((1, 2), witnesses, strict=True)
    ]
    return witnesses, members
