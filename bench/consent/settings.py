"""The portal's settings with bench.consent.floor's URL added; used only by bench.consent.run."""

from consent_portal.settings import *  # noqa: F401,F403

ROOT_URLCONF = "bench.consent.floor"
