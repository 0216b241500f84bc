import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ledger import selectors
from ledger.keys import ledger_verifier_key
from ledger.verify import TrustError, trust_from_document


class Command(BaseCommand):
    help = (
        "Print this portal's trust file for `python -m ledger.verify --trust FILE`: the log's "
        "origin and verifier key, the registered witnesses' keys and the quorum. Hand it to "
        "custodians out of band (not over this server, which is what they are checking)."
    )

    def handle(self, *args, **options):
        trust = {
            "origin": settings.LEDGER_ORIGIN,
            "log_keys": [ledger_verifier_key()],
            # The same witnesses, in the same order, as the receipts name.
            "witness_keys": selectors._witness_keys(),
            "quorum": selectors.witness_quorum(),
        }
        try:
            trust_from_document(trust)  # what the verifier will accept, checked here first
        except TrustError as exc:
            raise CommandError(
                f"no usable trust file: {exc} (LEDGER_WITNESS_QUORUM is {trust['quorum']}, "
                f"{len(trust['witness_keys'])} witness(es) registered: register witnesses with "
                "create_member --verifier-key, or lower the quorum)"
            ) from None
        self.stdout.write(json.dumps(trust, indent=2))
