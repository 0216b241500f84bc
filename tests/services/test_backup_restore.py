"""Backup and restore as the README's Operating section says: pg_dump, pg_restore into a new
database, then verify_ledger against the restored copy, which must find the log intact."""

import os
import shutil
import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from consent_portal import demo, services
from tests.conftest import require_or_skip
from tests.services.conftest import ROOT, worker_database_url

pytestmark = pytest.mark.services


def _pg(url: str) -> list[str]:
    parts = urlsplit(url)
    return ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432), "-U", parts.username or "postgres"]


def test_a_restored_backup_verifies(real_services, tmp_path):
    for tool in ("pg_dump", "pg_restore", "createdb", "dropdb"):
        if not shutil.which(tool):
            require_or_skip(f"{tool} is not installed")
    demo.purposes_load()
    participant = services.participant_sign_up(username="backed-up", password="a long test password 1")
    consent = services.consent_grant(participant=participant, purpose=services.Purpose.objects.get(slug="general-research"))
    services.consent_change(participant=participant, consent_id=consent.pk, action="revoke")
    from ledger import services as ledger_services

    ledger_services.ledger_seal_pending()
    source = worker_database_url()
    env = {**os.environ, "PGPASSWORD": urlsplit(source).password or ""}
    dump = tmp_path / "portal.dump"
    subprocess.run(["pg_dump", *_pg(source), "-Fc", "-f", str(dump), urlsplit(source).path.lstrip("/")],
                   check=True, env=env)
    target_name = f"restore_{uuid.uuid4().hex[:8]}"
    subprocess.run(["createdb", *_pg(source), target_name], check=True, env=env)
    try:
        subprocess.run(["pg_restore", *_pg(source), "--no-owner", "-d", target_name, str(dump)], check=True, env=env)
        target = urlunsplit(urlsplit(source)._replace(path="/" + target_name))
        result = subprocess.run([sys.executable, "manage.py", "verify_ledger"], cwd=ROOT, capture_output=True,
                                text=True, env={**os.environ, "DATABASE_URL": target})
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ledger intact: 3 entries" in result.stdout
    finally:
        subprocess.run(["dropdb", *_pg(source), "--if-exists", target_name], env=env)
