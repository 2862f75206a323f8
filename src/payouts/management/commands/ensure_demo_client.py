import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from payouts.models import ApiClient, ApiKey

DEMO_CLIENT = "demo"


class Command(BaseCommand):
    help = (
        "Ensure the local demo API client exists and print a working key for it. Keys are stored "
        "hashed, so the plain key is kept in PAYOUTS_LOCAL_DATA_DIR/demo-api-key (mode 600) for "
        "the next run; a missing or revoked key is replaced."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        key_file = Path(settings.LOCAL_DATA_DIR) / "demo-api-key"
        client, _ = ApiClient.objects.get_or_create(name=DEMO_CLIENT)
        key = key_file.read_text().strip() if key_file.exists() else ""
        if not key or not self._is_usable(key, client):
            _, key = ApiKey.objects.create_key(name="demo key (make run)", client=client)
            key_file.parent.mkdir(parents=True, exist_ok=True)
            # Created private (0600) from the start, never readable by others even briefly.
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as private:
                private.write(key + "\n")
        self.stdout.write(key)

    @staticmethod
    def _is_usable(key: str, client: ApiClient) -> bool:
        prefix = key.partition(".")[0]
        api_key = ApiKey.objects.get_usable_keys().filter(prefix=prefix, client=client).first()
        return bool(api_key and api_key.is_valid(key) and client.is_active)
