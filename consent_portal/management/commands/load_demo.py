from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from consent_portal import demo


class Command(BaseCommand):
    help = "Load demo purposes, a study, users, a custodian and a sample (idempotent, DEBUG only)."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("Demo data has well-known passwords; it loads only when DEBUG is true.")
        loaded = demo.demo_load()
        p = demo.DEMO_PASSWORDS
        self.stdout.write(
            "\nDemo data is ready. Log in at " + settings.SITE_URL + "/login/ as:\n"
            f"  participant  participant / {p['participant']}\n"
            f"  ethics       ethics / {p['ethics']}\n"
            f"  admin        admin / {p['admin']}\n"
            f"Custodian API token (Demo biobank): {demo.DEMO_CUSTODIAN_TOKEN}\n"
            f"Demo sample S-0001 belongs to the participant the demo biobank calls {loaded['enrolment'].reference}.\n"
            "Try:\n"
            f"  curl -s -H 'Authorization: Bearer {demo.DEMO_CUSTODIAN_TOKEN}' -H 'Content-Type: application/json' \\\n"
            "    -d '{\"sample\": \"S-0001\", \"study\": \"diabetes-genomics-2026\", \"purpose\": \"DUO:0000006\"}' \\\n"
            f"    {settings.SITE_URL}/api/v1/consent-checks\n"
        )
