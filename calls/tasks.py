"""Work outside requests, on the Celery worker (burki/celery.py). Each task is safe to run twice
at once and to be delivered again after a worker died: the services it calls claim rows with
compare-and-set updates.

The services schedule some of these tasks, so each task imports its service when it runs.
"""

from __future__ import annotations

import logging
from uuid import UUID

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task
def calls_reconcile() -> dict[str, int]:
    """Settle calls a dead request left `queued` (calls.services.call_reconcile_stale)."""
    from calls.services import call_reconcile_stale

    report = call_reconcile_stale()
    if report.failed or report.adopted or report.left:
        logger.info(
            "reconciled queued calls: %d failed, %d adopted, %d left",
            report.failed,
            report.adopted,
            report.left,
        )
    return {"failed": report.failed, "adopted": report.adopted, "left": report.left}


@shared_task
def call_play_simulated(call_id: str, step: int) -> None:
    """One event of a sandbox call's script, at its time (calls.services.call_play_simulated)."""
    from calls.services import call_play_simulated

    call_play_simulated(call_id=UUID(call_id), step=step)


@shared_task(name="calls.tasks.calls_sweep")
def calls_sweep() -> dict[str, int]:
    """Settle placed calls whose end we never heard of (calls.services.calls_sweep)."""
    from calls.services import calls_sweep as sweep

    report = sweep()
    if report.settled or report.estimated:
        logger.info(
            "swept overdue calls: %d settled by their provider, %d by the rule, %d left",
            report.settled,
            report.estimated,
            report.left,
        )
    return {"settled": report.settled, "estimated": report.estimated, "left": report.left}


@shared_task
def call_settle(call_id: str, attempt: int) -> None:
    """Settle an ended call on its provider's record (calls.services.call_settle_from_record),
    asking again a few times while the record cannot settle it; the sweep takes it up after."""
    from calls.services import SETTLE_RETRY_SECONDS, call_settle_from_record, call_settle_later

    if not call_settle_from_record(call_id=UUID(call_id)) and attempt < len(SETTLE_RETRY_SECONDS):
        call_settle_later(call_id=UUID(call_id), attempt=attempt + 1)
