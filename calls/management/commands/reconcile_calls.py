from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from calls.services import call_reconcile_stale


class Command(BaseCommand):
    help = (
        "Settle calls stuck in 'queued' because their request died before the provider answered: "
        "adopt the provider's call if it placed one, otherwise mark the call failed and release "
        "its hold. Run it every minute (cron, a systemd timer or a scheduler)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--grace-seconds",
            type=int,
            default=None,
            help="Leave younger queued calls alone (default: CALL_RECONCILE_GRACE_SECONDS).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = call_reconcile_stale(grace_seconds=options["grace_seconds"])
        self.stdout.write(
            f"Reconciled queued calls: {report.failed} failed, {report.adopted} adopted, "
            f"{report.left} left for the next run."
        )
