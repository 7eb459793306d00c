"""Customer webhooks on the worker. The relay runs on the scheduler every
WEBHOOK_RELAY_INTERVAL_SECONDS; every task is safe to run twice at once (rows are leased or
claimed) and to be lost (the relay finds the work again)."""

from __future__ import annotations

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(name="webhooks.tasks.webhooks_relay")
def webhooks_relay() -> dict[str, int]:
    """Fan new events out, then hand every delivery that is due to a worker."""
    from webhooks.services import deliveries_claim_due, events_dispatch

    dispatched = events_dispatch()
    due = deliveries_claim_due()
    for delivery_id in due:
        webhook_send.apply_async((delivery_id,), retry=False)
    return {"dispatched": dispatched, "sent": len(due)}


@shared_task(name="webhooks.tasks.webhook_send")
def webhook_send(delivery_id: int) -> None:
    from webhooks.services import delivery_send

    delivery_send(delivery_id=delivery_id)


@shared_task(name="webhooks.tasks.webhooks_purge")
def webhooks_purge() -> int:
    from webhooks.services import deliveries_purge

    return deliveries_purge()
