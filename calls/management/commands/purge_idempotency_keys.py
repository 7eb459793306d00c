from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from calls.idempotency import idempotency_keys_purge


class Command(BaseCommand):
    help = (
        "Delete Idempotency-Key records past their 24 h life. Expired keys are also replaced "
        "when a client reuses one, so this only keeps the table small: run it daily."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = idempotency_keys_purge()
        self.stdout.write(f"Deleted {deleted} expired idempotency key(s).")
