from django.core.management.base import BaseCommand, CommandError

from ledger.services import member_register


class Command(BaseCommand):
    help = (
        "Register a consortium member organisation. With --verifier-key (a C2SP "
        "cosignature/v1 key, as run_witness prints) and --witness-url it is also a witness."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--verifier-key", default="")
        parser.add_argument("--witness-url", default="", help="prefix of its /add-checkpoint")

    def handle(self, *args, name, verifier_key, witness_url, **options):
        try:
            member = member_register(name=name, verifier_key=verifier_key, witness_url=witness_url)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"member {member.id}: {member.name}")
