"""Start Django for a benchmark script run from the project folder."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup():
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "consent_portal.settings")
    import django

    django.setup()
