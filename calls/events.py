"""A call's events for the customer's webhooks (the webhooks app sends them).

`call.status_changed` is written with every status change the API shows, `call.ended` once,
when the call's money is settled, `call.answered_by` once, when the provider's answering-machine
detection says who answered, and `call.transferred` with each transfer. Each is written by the
service making the change, in its transaction, right after the call's row was changed: the
event's data is that row as the database then has it (one INSERT, see
webhooks.services.event_record), rendered when it is sent exactly as `GET /calls/{call_id}`
shows a call.
"""

from __future__ import annotations

import json
from datetime import UTC
from functools import cache
from typing import Any
from uuid import UUID, uuid4

from django.db import connection, models
from django.db.models.functions import JSONObject
from django.utils.dateparse import parse_datetime

from calls.models import Call
from webhooks.models import WebhookEvent
from webhooks.services import event_record, event_type_register

STATUS_CHANGED = "call.status_changed"
ENDED = "call.ended"
ANSWERED_BY = "call.answered_by"
TRANSFERRED = "call.transferred"


@cache
def snapshot_fields() -> list[str]:
    """The columns the API shows of a call, by attribute name: what CallOutputSerializer reads,
    so an event's data can never miss a field that `GET /calls/{call_id}` shows."""
    from calls.apis import CallOutputSerializer  # the API module imports the services

    return [str(field.source) for field in CallOutputSerializer().fields.values()]


def call_event_record(*, call: Call, event_type: str) -> None:
    """Write one event about `call` in the current transaction, after the change it reports."""
    sql, params = _snapshot_sql(connection.vendor)
    pk = Call._meta.pk
    assert pk is not None
    event_record(
        organization_id=call.organization_id,
        event_type=event_type,
        subject_id=call.pk,
        data=(
            sql,
            [pk.get_db_prep_value(call.pk, connection) if p is _CALL else p for p in params],
        ),
    )


_CALL = uuid4()  # stands for the call's id while the snapshot's SQL is built


@cache
def _snapshot_sql(vendor: str) -> tuple[str, list[Any]]:
    """The call's row as one JSON object, by the database's own JSON functions: built once."""
    snapshot = (
        Call.objects.filter(pk=_CALL)
        .order_by()
        .values(data=JSONObject(**{name: name for name in snapshot_fields()}))[:1]
    )
    sql, params = snapshot.query.sql_with_params()
    prepared = Call._meta.pk.get_db_prep_value(_CALL, connection)  # type: ignore[union-attr]
    return sql, [_CALL if p in (prepared, _CALL) else p for p in params]


def call_from_snapshot(data: dict[str, Any]) -> Call:
    """The call as its event's snapshot has it (never saved). The database wrote the snapshot
    in its own JSON: on SQLite, times are naive UTC text and JSON columns are text."""
    values: dict[str, Any] = {}
    for name in snapshot_fields():
        field = Call._meta.get_field(name.removesuffix("_id") if name.endswith("_id") else name)
        value = data.get(name)
        if name == "id":
            value = UUID(str(value))
        elif isinstance(field, models.DateTimeField) and isinstance(value, str):
            parsed = parse_datetime(value)
            if parsed is not None and parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            value = parsed
        elif isinstance(field, models.JSONField) and isinstance(value, str):
            value = json.loads(value)
        values[name] = value
    return Call(**values)


def _previous_status(event: WebhookEvent) -> str | None:
    data = (
        WebhookEvent.objects.filter(
            subject_id=event.subject_id, type=STATUS_CHANGED, sequence__lt=event.sequence
        )
        .order_by("-sequence")
        .values_list("data", flat=True)
        .first()
    )
    return None if data is None else str(data["status"])


def call_event_data(event: WebhookEvent) -> dict[str, Any]:
    from calls.apis import CallOutputSerializer

    data: dict[str, Any] = dict(CallOutputSerializer(call_from_snapshot(event.data)).data)
    data["sequence"] = event.sequence
    if event.type == STATUS_CHANGED:
        data["previous_status"] = _previous_status(event)
    return data


def register() -> None:
    event_type_register(STATUS_CHANGED, call_event_data)
    event_type_register(ENDED, call_event_data)
    event_type_register(ANSWERED_BY, call_event_data)
    event_type_register(TRANSFERRED, call_event_data)
