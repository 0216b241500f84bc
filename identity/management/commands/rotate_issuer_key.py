"""Rotates the portal's issuer key; lists or changes the trust configuration.

    manage.py rotate_issuer_key                      new active key; the old one stays trusted
    manage.py rotate_issuer_key --distrust-previous  ... and the old one is no longer trusted
    manage.py rotate_issuer_key --list               the keys, which is active, which trusted
    manage.py rotate_issuer_key --distrust DID | --trust DID
"""

from django.core.management.base import BaseCommand, CommandError

from identity import selectors, services


class Command(BaseCommand):
    help = "Rotate the issuer key (credentials signed by earlier trusted keys still verify)."

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--list", action="store_true", help="list the issuer keys and exit")
        group.add_argument("--distrust", metavar="DID", help="withdraw trust from a rotated-out key")
        group.add_argument("--trust", metavar="DID", help="trust a rotated-out key again")
        parser.add_argument("--distrust-previous", action="store_true",
                            help="with a rotation: the previous key is no longer trusted (compromised)")

    def handle(self, *args, **options):
        try:
            if options["distrust"] or options["trust"]:
                did = options["distrust"] or options["trust"]
                services.issuer_trust_set(did=did, trusted=bool(options["trust"]))
            elif not options["list"]:
                key = services.issuer_rotate(distrust_previous=options["distrust_previous"])
                self.stdout.write(f"new issuer key {key.did}")
        except services.IssuerRotationError as exc:
            raise CommandError(str(exc)) from None
        for key in selectors.issuer_keys():
            flags = ", ".join(f for f, on in (("active", key.active), ("trusted", key.trusted)) if on)
            self.stdout.write(f"{key.did}  {flags or 'not trusted'}  created {key.created_at:%Y-%m-%d %H:%M}")
