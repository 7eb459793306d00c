from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from burki.crypto import secrets_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret (provider tokens, private keys, SIP passwords) with the "
        "first key of FIELD_ENCRYPTION_KEYS. To rotate: put a new key first, keep the old ones "
        "after it, deploy, run this, then remove the old keys."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        rotated = secrets_rotate()
        self.stdout.write(
            f"Re-encrypted {rotated} secret(s) with the first key of FIELD_ENCRYPTION_KEYS."
        )
