from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError

from payouts.models import ApiClient, ApiKey


class Command(BaseCommand):
    help = "Create an API client and a key for it; the key is printed once, alone on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The client's unique name, e.g. the merchant's")
        parser.add_argument(
            "--existing-ok",
            action="store_true",
            help="If the client exists, issue it an additional key instead of failing.",
        )

    def handle(self, *args: Any, name: str, existing_ok: bool, **options: Any) -> None:
        name = name.strip()
        if not name or len(name) > 100:
            raise CommandError("NAME must be 1-100 characters.")
        try:
            client, created = (
                ApiClient.objects.get_or_create(name=name)
                if existing_ok
                else (ApiClient.objects.create(name=name), True)
            )
        except IntegrityError:
            raise CommandError(
                f"API client {name!r} exists; pass --existing-ok to add a key."
            ) from None
        _, key = ApiKey.objects.create_key(name=f"{name} key", client=client)
        self.stderr.write(
            f"{'Created' if created else 'Found'} API client {name!r} (id {client.pk}). "
            "Its key is shown only now; store it safely:"
        )
        self.stdout.write(key)
