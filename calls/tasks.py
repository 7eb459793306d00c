"""Work outside requests, on the Celery worker (burki/celery.py). Each task is safe to run twice
at once and to be delivered again after a worker died: the services it calls claim rows with
compare-and-set updates."""

from __future__ import annotations

import logging

from celery import shared_task

from calls.services import call_reconcile_stale

logger = logging.getLogger(__name__)


@shared_task
def calls_reconcile() -> dict[str, int]:
    """Settle calls a dead request left `queued` (calls.services.call_reconcile_stale)."""
    report = call_reconcile_stale()
    if report.failed or report.adopted or report.left:
        logger.info(
            "reconciled queued calls: %d failed, %d adopted, %d left",
            report.failed,
            report.adopted,
            report.left,
        )
    return {"failed": report.failed, "adopted": report.adopted, "left": report.left}
