"""The campaigns' work on the Celery worker: the beat's tick and the dialers it keeps going.
Safe to run twice at once: claims are row locks and compare-and-set updates, a dialer's slot an
advisory lock."""

from __future__ import annotations

import logging
from uuid import UUID

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(name="campaigns.tasks.campaigns_tick")
def campaigns_tick() -> dict[str, int]:
    from campaigns.services import campaigns_tick as tick

    return tick()


@shared_task(name="campaigns.tasks.campaign_dial")
def campaign_dial(campaign_id: str, slot: int) -> int:
    from campaigns.services import campaign_dial as dial

    return dial(campaign_id=UUID(campaign_id), slot=slot)
