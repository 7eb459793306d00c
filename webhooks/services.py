"""Customer webhooks: endpoints, the outbox, and sending (Standard Webhooks).

Delivery is at least once. Each event is written in the transaction of the change it reports
(`event_record`); the relay (webhooks.tasks.webhooks_relay, every WEBHOOK_RELAY_INTERVAL_SECONDS)
fans new events out to the endpoints subscribed to them and hands due deliveries to the worker,
which sends each (`delivery_send`) until the endpoint answers 2xx, retrying on
WEBHOOK_RETRY_SCHEDULE. A worker that dies mid-send only leaves a lease that runs out, so
nothing is lost, and a retry carries the same `webhook-id`. An endpoint receives one subject's
events (one call's) in `sequence` order: a delivery waits while an earlier one to the same
endpoint about the same subject is still pending.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import secrets as secrets_module
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from webhooks import http
from webhooks.errors import WebhookUrlRefused
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

logger = logging.getLogger(__name__)

# How each type's `data` is made from the event's snapshot, by the app that owns its subject
# (calls registers the call events in its AppConfig.ready).
Renderer = Callable[[WebhookEvent], dict[str, Any]]
_renderers: dict[str, Renderer] = {}


def event_type_register(event_type: str, renderer: Renderer) -> None:
    _renderers[event_type] = renderer


# ---- endpoints ----------------------------------------------------------------------------


def _new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets_module.token_bytes(32)).decode()


def _check_url(url: str) -> None:
    try:
        http.check_url(url)
    except http.TargetRefused as exc:
        raise WebhookUrlRefused(str(exc)) from exc


def webhook_endpoint_create(
    *, organization_id: int, url: str, events: list[str]
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret (returned once: only its encryption is kept)."""
    _check_url(url)
    secret = _new_secret()
    endpoint = WebhookEndpoint.objects.create(
        organization_id=organization_id, url=url, events=events, secret=secret
    )
    return endpoint, secret


def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    events: list[str] | None = None,
    enabled: bool | None = None,
) -> WebhookEndpoint:
    fields = ["updated_at"]
    if url is not None:
        _check_url(url)
        endpoint.url = url
        fields.append("url")
    if events is not None:
        endpoint.events = events
        fields.append("events")
    if enabled is not None:
        endpoint.enabled = enabled
        fields.append("enabled")
        if enabled:  # a fresh start: its failures so far are forgiven
            endpoint.disabled_reason, endpoint.failing_since = "", None
            fields += ["disabled_reason", "failing_since"]
    endpoint.save(update_fields=fields)
    return endpoint


def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint) -> str:
    """A new secret; the one before is still signed with for WEBHOOK_SECRET_OVERLAP_SECONDS, so
    a receiver can switch over without losing a delivery."""
    secret = _new_secret()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = timezone.now() + timedelta(
        seconds=settings.WEBHOOK_SECRET_OVERLAP_SECONDS
    )
    endpoint.secret = secret
    endpoint.save(
        update_fields=["secret", "previous_secret", "previous_secret_until", "updated_at"]
    )
    return secret


# ---- the outbox ---------------------------------------------------------------------------


def event_record(
    *, organization_id: int, event_type: str, subject_id: UUID, data: tuple[str, list[Any]]
) -> None:
    """Write one event into the outbox, in the caller's transaction, in one INSERT: `data` is
    a subquery (its SQL and parameters) reading the subject's row as the caller's change left
    it, and the sequence is the subject's last plus one. (Events of one subject are written
    under that subject's row lock, taken by the change they report, so two never race for a
    number; the unique constraint would refuse the second.)

    On every status webhook: the statement is built once per process, not by the ORM each
    time, which cost ten times what the database takes to run it."""
    data_sql, data_params = data
    fields = {f.name: f for f in WebhookEvent._meta.concrete_fields}

    def prep(name: str, value: Any) -> Any:
        return fields[name].get_db_prep_value(value, connection)

    with connection.cursor() as cursor:
        cursor.execute(
            _insert_sql(connection.vendor).replace("(%DATA%)", f"({data_sql})"),
            [
                prep("id", uuid.uuid4()),
                organization_id,
                event_type,
                prep("subject_id", subject_id),
                prep("subject_id", subject_id),
                *data_params,
                prep("created_at", timezone.now()),
            ],
        )


# Names from the model's own metadata; every value a parameter.
_INSERT = (
    "INSERT INTO {table} ({id}, {organization}, {type}, {subject_id}, {sequence}, {data}, "
    "{created_at}) VALUES (%s, %s, %s, %s, "
    "COALESCE((SELECT MAX({sequence}) FROM {table} WHERE {subject_id} = %s), 0) + 1, "
    "(%DATA%), %s)"
)


@cache
def _insert_sql(vendor: str) -> str:
    quote = connection.ops.quote_name
    column = {f.name: quote(str(f.column)) for f in WebhookEvent._meta.concrete_fields}
    return _INSERT.format(table=quote(WebhookEvent._meta.db_table), **column)


def event_render(event: WebhookEvent) -> bytes:
    """The body every delivery of the event carries: `{"type", "timestamp", "data"}`."""
    envelope = {
        "type": event.type,
        "timestamp": event.created_at,
        "data": _renderers[event.type](event),
    }
    return json.dumps(envelope, cls=DjangoJSONEncoder, separators=(",", ":")).encode()


def _delivery(event: WebhookEvent, endpoint: WebhookEndpoint, now: datetime) -> WebhookDelivery:
    """The event for the endpoint, due now (with the event's place among its subject's)."""
    return WebhookDelivery(
        event=event,
        endpoint=endpoint,
        subject_id=event.subject_id,
        sequence=event.sequence,
        next_attempt_at=now,
    )


def events_dispatch(*, now: datetime | None = None, limit: int = 500) -> int:
    """Fan new events out to the endpoints subscribed to them when they happened."""
    now = now or timezone.now()
    with transaction.atomic():
        events = list(
            WebhookEvent.objects.filter(dispatched_at__isnull=True)
            .order_by("created_at")
            .select_for_update(skip_locked=True)[:limit]
        )
        if not events:
            return 0
        endpoints: dict[int, list[WebhookEndpoint]] = {}
        for endpoint in WebhookEndpoint.objects.filter(
            organization_id__in={e.organization_id for e in events}, enabled=True
        ):
            endpoints.setdefault(endpoint.organization_id, []).append(endpoint)
        WebhookDelivery.objects.bulk_create(
            [
                _delivery(event, endpoint, now)
                for event in events
                for endpoint in endpoints.get(event.organization_id, [])
                if endpoint.wants(event.type) and endpoint.created_at <= event.created_at
            ],
            ignore_conflicts=True,
        )
        WebhookEvent.objects.filter(pk__in=[e.pk for e in events]).update(dispatched_at=now)
    return len(events)


# ---- sending ------------------------------------------------------------------------------


def _lease_free(now: datetime) -> Q:
    return Q(leased_until__isnull=True) | Q(leased_until__lt=now)


def _first_in_line() -> Any:
    """No earlier delivery to the same endpoint about the same subject is still pending."""
    earlier = WebhookDelivery.objects.filter(
        endpoint_id=OuterRef("endpoint_id"),
        subject_id=OuterRef("subject_id"),
        sequence__lt=OuterRef("sequence"),
        state=WebhookDelivery.State.PENDING,
    )
    return ~Exists(earlier)


def deliveries_claim_due(*, now: datetime | None = None, limit: int = 200) -> list[int]:
    """Lease the deliveries that may be sent now; the caller sends each (`delivery_send`)."""
    now = now or timezone.now()
    lease = now + timedelta(seconds=settings.WEBHOOK_LEASE_SECONDS)
    with transaction.atomic():
        due = list(
            WebhookDelivery.objects.filter(
                _lease_free(now),
                _first_in_line(),
                state=WebhookDelivery.State.PENDING,
                next_attempt_at__lte=now,
                endpoint__enabled=True,
            )
            .order_by("next_attempt_at")
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("pk", flat=True)[:limit]
        )
        WebhookDelivery.objects.filter(pk__in=due).update(leased_until=lease)
    return due


def _claim_next(delivery: WebhookDelivery, now: datetime) -> int | None:
    """The same subject's next event to the same endpoint, leased, if it is due now."""
    lease = now + timedelta(seconds=settings.WEBHOOK_LEASE_SECONDS)
    following = (
        WebhookDelivery.objects.filter(
            _lease_free(now),
            _first_in_line(),
            endpoint_id=delivery.endpoint_id,
            subject_id=delivery.subject_id,
            state=WebhookDelivery.State.PENDING,
            next_attempt_at__lte=now,
        )
        .values_list("pk", flat=True)
        .first()
    )
    if following is None:
        return None
    claimed = WebhookDelivery.objects.filter(_lease_free(now), pk=following).update(
        leased_until=lease
    )
    return following if claimed else None


def delivery_send(*, delivery_id: int) -> None:
    """Send a leased delivery, and then, while the endpoint takes them, the same subject's
    next ones (a call's events follow each other within a second)."""
    next_id: int | None = delivery_id
    while next_id is not None:
        delivery = _delivery_send_one(delivery_id=next_id)
        if delivery is None or delivery.state != WebhookDelivery.State.DELIVERED:
            return
        next_id = _claim_next(delivery, timezone.now())


def _signature(endpoint: WebhookEndpoint, msg_id: str, at: datetime, body: str) -> str:
    signatures = [Webhook(endpoint.secret).sign(msg_id=msg_id, timestamp=at, data=body)]
    until = endpoint.previous_secret_until
    if endpoint.previous_secret and until is not None and at < until:
        old = Webhook(endpoint.previous_secret).sign(msg_id=msg_id, timestamp=at, data=body)
        signatures.append(old)
    return " ".join(signatures)


def _delivery_send_one(*, delivery_id: int) -> WebhookDelivery | None:
    delivery = (
        WebhookDelivery.objects.select_related("event", "endpoint").filter(pk=delivery_id).first()
    )
    if delivery is None or delivery.state != WebhookDelivery.State.PENDING:
        return None
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(leased_until=None)
        return None
    try:
        body = event_render(delivery.event).decode()
    except Exception as exc:
        # Our failure, not the receiver's: counted against the delivery's schedule (so it ends),
        # never against the endpoint's health.
        logger.exception("webhook event %s could not be rendered", delivery.event_id)
        error = f"The event could not be rendered: {type(exc).__name__}."
        failed = http.Answer(status_code=None, body=b"", latency_ms=0, error=error)
        _delivery_record(delivery=delivery, started=timezone.now(), answer=failed, ours=True)
        return delivery
    started = timezone.now()
    msg_id = str(delivery.event_id)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "burki-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(started.timestamp())),
        "webhook-signature": _signature(endpoint, msg_id, started, body),
    }
    answer = http.post(endpoint.url, body.encode(), headers)
    _delivery_record(delivery=delivery, started=started, answer=answer)
    return delivery


def _retry_delay(attempts: int) -> float | None:
    """Seconds before the next try after `attempts` tries, with ±10 % jitter so that the
    deliveries a recovering receiver failed together do not all come back at once; None when
    the schedule is spent."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    if attempts > len(schedule):
        return None
    return float(schedule[attempts - 1]) * random.uniform(0.9, 1.1)  # noqa: S311 - not a secret


def _delivery_record(
    *, delivery: WebhookDelivery, started: datetime, answer: http.Answer, ours: bool = False
) -> None:
    now = timezone.now()
    succeeded = answer.status_code is not None and 200 <= answer.status_code < 300
    attempts = delivery.attempts + 1
    updates: dict[str, Any] = {"attempts": attempts, "leased_until": None}
    if succeeded:
        updates.update(state=WebhookDelivery.State.DELIVERED, delivered_at=now)
    else:
        delay = _retry_delay(attempts)
        if delay is None or answer.status_code == 410:
            updates["state"] = WebhookDelivery.State.FAILED
        else:
            updates["next_attempt_at"] = now + timedelta(seconds=delay)
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery_id=delivery.pk,
            started_at=started,
            status_code=answer.status_code,
            latency_ms=answer.latency_ms,
            response_excerpt=answer.body[: settings.WEBHOOK_EXCERPT_BYTES].decode(
                "utf-8", "replace"
            ),
            error=answer.error,
        )
        WebhookDelivery.objects.filter(pk=delivery.pk).update(**updates)
        if not ours:
            _endpoint_after_attempt(endpoint=delivery.endpoint, answer=answer, now=now)
    for name, value in updates.items():
        setattr(delivery, name, value)


def _endpoint_after_attempt(
    *, endpoint: WebhookEndpoint, answer: http.Answer, now: datetime
) -> None:
    if answer.status_code is not None and 200 <= answer.status_code < 300:
        if endpoint.failing_since is not None:
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
            endpoint.failing_since = None
        return
    if answer.status_code == 410:
        _endpoint_disable(endpoint, "The endpoint answered 410 Gone.")
        return
    if endpoint.failing_since is None:
        WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(
            failing_since=now
        )
        endpoint.failing_since = now
    elif now - endpoint.failing_since > timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_SECONDS):
        days = settings.WEBHOOK_DISABLE_AFTER_SECONDS / 86400
        _endpoint_disable(endpoint, f"Every delivery failed for {days:g} days.")


def _endpoint_disable(endpoint: WebhookEndpoint, reason: str) -> None:
    disabled = WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=True).update(
        enabled=False, disabled_reason=reason, updated_at=timezone.now()
    )
    if disabled:
        logger.warning("webhook endpoint %s disabled: %s", endpoint.pk, reason)
    endpoint.enabled, endpoint.disabled_reason = False, reason


def event_redeliver(*, event: WebhookEvent, endpoint: WebhookEndpoint | None = None) -> int:
    """Send an event again to every enabled endpoint it went to (or would go to now), or only
    to `endpoint`, whatever became of it before; returns to how many endpoints."""
    now = timezone.now()
    enabled = WebhookEndpoint.objects.filter(organization_id=event.organization_id, enabled=True)
    if endpoint is not None:
        enabled = enabled.filter(pk=endpoint.pk)
    endpoints = [e for e in enabled if e.wants(event.type)]
    with transaction.atomic():
        WebhookDelivery.objects.bulk_create(
            [_delivery(event, endpoint, now) for endpoint in endpoints], ignore_conflicts=True
        )
        again = WebhookDelivery.objects.filter(event=event, endpoint__in=endpoints).update(
            state=WebhookDelivery.State.PENDING,
            attempts=0,
            next_attempt_at=now,
            leased_until=None,
            delivered_at=None,
        )
    return again


def deliveries_purge(*, now: datetime | None = None) -> int:
    """Forget events older than WEBHOOK_EVENT_RETENTION_DAYS, with their deliveries."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.WEBHOOK_EVENT_RETENTION_DAYS)
    deleted, _ = WebhookEvent.objects.filter(created_at__lt=cutoff).delete()
    return deleted
