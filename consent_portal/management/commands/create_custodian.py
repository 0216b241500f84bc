from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from consent_portal import services


class Command(BaseCommand):
    help = "Create a data custodian and print its API token once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="The custodian's name, e.g. 'Central biobank'.")

    def handle(self, *args, name, **options):
        try:
            _, token = services.custodian_create(name=name)
        except IntegrityError:
            raise CommandError(f"A custodian named {name!r} already exists.") from None
        self.stdout.write(f"Custodian {name!r} created. Its token, shown only now:\n{token}")
