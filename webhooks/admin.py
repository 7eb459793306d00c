"""Operators see every endpoint's health and every delivery; secrets are never shown."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from burki.admin_tenancy import MANAGED, READ, OrganizationScopedAdmin
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from webhooks.services import event_redeliver, webhook_endpoint_update


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class AttemptInline(ReadOnlyInline):
    model = WebhookAttempt
    show_change_link = False
    fields = readonly_fields = (
        "started_at",
        "status_code",
        "latency_ms",
        "error",
        "response_excerpt",
    )


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(OrganizationScopedAdmin):
    """An organization's own to manage (made through the API, which shows the secret once)."""

    rights = MANAGED
    list_display = [
        "url",
        "organization",
        "enabled",
        "disabled_reason",
        "failing_since",
        "created_at",
    ]
    # "Enabled: No" with a reason lists the endpoints we disabled (410, or failing for days).
    list_filter = ["enabled", "organization"]
    list_select_related = ["organization"]
    search_fields = ["url", "id"]
    fields = [
        "organization",
        "url",
        "events",
        "enabled",
        "disabled_reason",
        "failing_since",
        "previous_secret_until",
        "created_at",
        "updated_at",
    ]
    readonly_fields = [
        "organization",
        "disabled_reason",
        "failing_since",
        "previous_secret_until",
        "created_at",
        "updated_at",
    ]
    actions = ["enable"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Enable again (forgets why it was disabled)")
    def enable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            webhook_endpoint_update(endpoint=endpoint, enabled=True)
        self.message_user(request, f"{queryset.count()} endpoint(s) enabled.", messages.SUCCESS)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(OrganizationScopedAdmin):
    """Read-only: a delivery changes by being sent. Anyone who sees one may send it again."""

    organization_path = "endpoint__organization"
    rights = READ
    list_display = [
        "created_at",
        "endpoint",
        "event_type",
        "subject_id",
        "sequence",
        "state",
        "attempts",
        "next_attempt_at",
    ]
    list_filter = ["state", "event__type"]
    list_select_related = ["endpoint", "event"]
    search_fields = ["subject_id", "event__id", "endpoint__url"]
    date_hierarchy = "created_at"
    inlines = [AttemptInline]
    actions = ["redeliver"]

    @admin.display(description="Event", ordering="event__type")
    def event_type(self, delivery: WebhookDelivery) -> str:
        return delivery.event.type

    def get_readonly_fields(
        self, request: HttpRequest, obj: WebhookDelivery | None = None
    ) -> list[str]:
        return [field.name for field in WebhookDelivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: WebhookDelivery | None = None
    ) -> bool:
        return request.method in ("GET", "HEAD") and self.has_view_permission(request, obj)

    def has_delete_permission(
        self, request: HttpRequest, obj: WebhookDelivery | None = None
    ) -> bool:
        return False

    @admin.action(description="Send again")
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        sent = sum(
            event_redeliver(event=delivery.event, endpoint=delivery.endpoint)
            for delivery in queryset.select_related("event", "endpoint")
        )
        self.message_user(request, f"Sent again to {sent} endpoint(s).", messages.SUCCESS)
