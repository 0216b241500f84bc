from django.core.management.base import BaseCommand, CommandError

from ledger.models import Member
from ledger.services import member_token_create


class Command(BaseCommand):
    help = "Create a read token for a consortium member. The token is printed once, never stored."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the member's registered name")

    def handle(self, *args, name, **options):
        member = Member.objects.filter(name=name, active=True).first()
        if member is None:
            raise CommandError(f"no active member named {name!r}; see create_member")
        _, token = member_token_create(member_id=member.id)
        self.stdout.write(token)
