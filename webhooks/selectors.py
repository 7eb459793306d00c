from __future__ import annotations

from uuid import UUID

from django.db.models import Prefetch, QuerySet

from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent


def webhook_endpoints_for_organization(*, organization_id: int) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(organization_id=organization_id)


def webhook_endpoint_for_organization(
    *, organization_id: int, endpoint_id: UUID
) -> WebhookEndpoint | None:
    return WebhookEndpoint.objects.filter(organization_id=organization_id, pk=endpoint_id).first()


def webhook_deliveries_for_endpoint(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    """Newest first, each with its event and every attempt (two queries more per page)."""
    return (
        WebhookDelivery.objects.filter(endpoint=endpoint)
        .select_related("event")
        .prefetch_related(
            Prefetch("attempt_log", queryset=WebhookAttempt.objects.order_by("started_at", "id"))
        )
    )


def webhook_event_for_organization(*, organization_id: int, event_id: UUID) -> WebhookEvent | None:
    return WebhookEvent.objects.filter(organization_id=organization_id, pk=event_id).first()
