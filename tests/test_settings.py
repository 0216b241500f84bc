"""Production settings: fail loudly when misconfigured, and pass Django's deploy checks."""

import base64
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "x" * 30 + "-production-secret-for-the-check-only-0123456789",
    "KEY_ENCRYPTION_KEY": base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("="),
    "ALLOWED_HOSTS": "consent.example.org",
    "SITE_URL": "https://consent.example.org",
}


def manage(*args, **env):
    # The browser tests set DJANGO_ALLOW_ASYNC_UNSAFE for their own process only.
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION and k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **env},
        capture_output=True, text=True, timeout=120,
    )


def test_production_settings_pass_check_deploy():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_without_a_key_encryption_key_refuses_to_start():
    env = {**PRODUCTION, "KEY_ENCRYPTION_KEY": ""}
    result = manage("check", **env)
    assert result.returncode != 0 and "KEY_ENCRYPTION_KEY must be set" in result.stderr


def test_a_malformed_setting_fails_loudly():
    result = manage("check", **{**PRODUCTION, "LEDGER_SEAL_BATCH": "lots"})
    assert result.returncode != 0 and "LEDGER_SEAL_BATCH must be an integer" in result.stderr
