"""A campaign's events for the customer's webhooks: `campaign.started` when it begins dialling,
`campaign.completed` when it is over (every recipient tried, or canceled: `status` says which).
Written by the service making the change, in its transaction, as the call events are
(calls.events): the event's data is the campaign's row as the change left it."""

from __future__ import annotations

import json
from functools import cache
from typing import Any
from uuid import UUID, uuid4

from django.db import connection
from django.db.models.functions import JSONObject

from campaigns.models import Campaign
from webhooks.models import WebhookEvent
from webhooks.services import event_record, event_type_register

STARTED = "campaign.started"
COMPLETED = "campaign.completed"

# What an event shows of the campaign, by its name in the event and its column.
SNAPSHOT = {
    "campaign_id": "id",
    "name": "name",
    "status": "status",
    "calls_per_second": "calls_per_second",
    "max_concurrent_calls": "max_concurrent_calls",
    "metadata": "metadata",
    "created_at": "created_at",
    "started_at": "started_at",
    "ended_at": "ended_at",
}

_CAMPAIGN = uuid4()  # stands for the campaign's id while the snapshot's SQL is built


@cache
def _snapshot_sql(vendor: str) -> tuple[str, list[Any]]:
    snapshot = (
        Campaign.objects.filter(pk=_CAMPAIGN).order_by().values(data=JSONObject(**SNAPSHOT))[:1]
    )
    sql, params = snapshot.query.sql_with_params()
    prepared = Campaign._meta.pk.get_db_prep_value(_CAMPAIGN, connection)  # type: ignore[union-attr]
    return sql, [_CAMPAIGN if p in (prepared, _CAMPAIGN) else p for p in params]


def campaign_event_record(*, campaign: Campaign, event_type: str) -> None:
    """Write one event about `campaign` in the current transaction, after its change."""
    sql, params = _snapshot_sql(connection.vendor)
    pk = Campaign._meta.pk
    assert pk is not None
    prepared = pk.get_db_prep_value(campaign.pk, connection)
    event_record(
        organization_id=campaign.organization_id,
        event_type=event_type,
        subject_id=campaign.pk,
        data=(sql, [prepared if p is _CAMPAIGN else p for p in params]),
    )


def campaign_event_data(event: WebhookEvent) -> dict[str, Any]:
    data = dict(event.data) if isinstance(event.data, dict) else json.loads(event.data)
    if isinstance(data.get("metadata"), str):  # SQLite's JSON functions give JSON as text
        data["metadata"] = json.loads(data["metadata"])
    data["campaign_id"] = str(UUID(str(data["campaign_id"])))  # SQLite keeps it as hex
    data["sequence"] = event.sequence
    return data


def register() -> None:
    event_type_register(STARTED, campaign_event_data)
    event_type_register(COMPLETED, campaign_event_data)
