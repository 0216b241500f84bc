"""A `celery worker` whose sequencer pauses after marking each batch, for kill tests.

Test-only: this wrapper is the only way to get the pause (nothing in ledger/ reads
these variables), so production workers cannot be slowed by it. Each batch appends
"pid first_index count start_time" to $LEDGER_TEST_MARKER while it still holds the lock
and its transaction is open, then sleeps $LEDGER_TEST_SEAL_PAUSE seconds.
"""

import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "consent_portal.settings")

import django  # noqa: E402

django.setup()

from ledger import services  # noqa: E402

_mark = services._entries_mark_sealed
PAUSE = float(os.environ["LEDGER_TEST_SEAL_PAUSE"])
MARKER = os.environ["LEDGER_TEST_MARKER"]


def _slow_mark(ids, first_index, **marked):
    _mark(ids, first_index, **marked)
    with open(MARKER, "a") as f:
        f.write(f"{os.getpid()} {first_index} {len(ids)} {time.time()}\n")
    time.sleep(PAUSE)


services._entries_mark_sealed = _slow_mark

if __name__ == "__main__":
    from celery.bin.celery import main

    sys.argv = ["celery", *sys.argv[1:]]
    sys.exit(main())
