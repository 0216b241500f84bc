import subprocess
import sys


def test_pure_modules_load_without_django():
    # They back the offline receipt verifier, which runs without the project installed.
    code = (
        "import sys, ledger.merkle, ledger.note, ledger.canonical, ledger.tiles; "
        "bad = sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('django', 'rest_framework', 'celery')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
