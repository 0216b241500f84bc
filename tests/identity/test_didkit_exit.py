"""A program that verifies a credential must end with its own exit status.

didkit finishes each call on a tokio thread that takes the GIL to hand the result to the
asyncio loop and releases it while waking the loop; if the program reached its end meanwhile,
that thread was killed mid-call by the finalizing interpreter and took the process with it
(SIGABRT in PyGILState_Release, or SIGSEGV), in most runs. didkit_backend's exit hook now
waits for those threads first. These tests run the real program in subprocesses (each with
a SQLite database of its own) and do not touch the test database.
"""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("didkit_exit_script.py")
RUNS = 8  # the unfixed module failed about 4 runs in 5 here: 8 clean runs are not luck
PARALLEL = 2
HANG_GUARD_SECONDS = 180  # only so a hung child cannot hang the suite


@pytest.fixture(scope="module")
def program_env(tmp_path_factory):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    env["VAR_DIR"] = str(tmp_path_factory.mktemp("didkit-exit-var"))
    env["DJANGO_SETTINGS_MODULE"] = "consent_portal.settings"
    migrated = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS,
    )
    assert migrated.returncode == 0, migrated.stderr
    return env


def _run(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS,
    )


def test_verifying_program_exits_cleanly_every_time(program_env):
    # The first run creates the issuer key and status lists; the others share them.
    runs = [_run(program_env)]
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        runs += pool.map(lambda _: _run(program_env), range(RUNS - 1))
    failed = [run for run in runs if run.returncode != 0]
    assert not failed, (
        f"{len(failed)} of {RUNS} runs failed, exit statuses "
        f"{sorted(run.returncode for run in failed)}; first stderr:\n{failed[0].stderr[-2000:]}"
    )


def test_exit_hook_leaves_no_didkit_work_behind(program_env):
    run = _run(program_env, "--check-hook")
    assert run.returncode == 0, run.stderr[-2000:]
    left = json.loads(run.stdout.strip().splitlines()[-1])
    assert left == {"pending": 0, "native_threads_in_python": 0}
