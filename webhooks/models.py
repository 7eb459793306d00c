"""What we tell our customers' software: endpoints, the outbox of events, and every delivery.

The outbox (`WebhookEvent`) is written in the transaction of the change it reports, so an event
exists exactly when its change does; the worker fans each one out to the endpoints subscribed
to it (`WebhookDelivery`) and sends it until it is taken (`WebhookAttempt` for each try).
"""

from __future__ import annotations

import uuid

from django.db import models

from burki.crypto import EncryptedTextField

# Every event type we send; an endpoint subscribes to some or (with none named) all of them.
EVENT_TYPES = {
    "call.status_changed": "A call's status changed.",
    "call.ended": "A call is over and its money settled: the last event of every call.",
    "call.answered_by": "The provider's answering-machine detection said who answered a call "
    "(`answered_by`).",
    "call.transferred": "A call in progress was transferred (`transferred_to`).",
    "campaign.started": "A campaign began dialling.",
    "campaign.completed": "A campaign is over: every recipient tried, or the campaign canceled.",
}


class WebhookEndpoint(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        "burki.Organization", on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000)
    # Event types; empty means every type, including those added later.
    events = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    # Why we disabled it (it answered 410, or failed for days); empty when the customer did.
    disabled_reason = models.CharField(max_length=200, blank=True)
    # `whsec_` + base64 (Standard Webhooks); encrypted at rest, shown only when it is made.
    secret = EncryptedTextField(editable=False)
    # During a rotation, the secret before, still signed with until `previous_secret_until`.
    previous_secret = EncryptedTextField(blank=True, editable=False)
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    # The first failed attempt since its last success: failing for days disables it.
    failing_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.url

    def wants(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


class WebhookEvent(models.Model):
    """One event, written in the transaction of the change it reports (the outbox)."""

    # Also the `webhook-id` of every delivery of it: receivers deduplicate on it.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by webhook_event_org_created, which leads with it.
    organization = models.ForeignKey(
        "burki.Organization", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    type = models.CharField(max_length=40)
    # What it is about (a call's id), and its place among that subject's events: 1, 2, 3...
    subject_id = models.UUIDField()
    sequence = models.PositiveIntegerField()
    # The subject's row as it stood when the event was written, read by the database itself in
    # the same statement (see webhooks.services.event_record); rendered when it is sent.
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    # When the worker created its deliveries; null while that is still to be done.
    dispatched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["subject_id", "sequence"], name="webhook_event_subject_sequence"
            )
        ]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="webhook_event_org_created"),
            models.Index(
                fields=["created_at"],
                condition=models.Q(dispatched_at__isnull=True),
                name="webhook_event_undispatched",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.sequence} of {self.subject_id}"


class WebhookDelivery(models.Model):
    """One event to one endpoint: sent until the endpoint takes it or we give up."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (gave up)"

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    # Indexed by the two indexes below, which lead with it.
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    # The event's, copied: a subject's events reach an endpoint in sequence order.
    subject_id = models.UUIDField()
    sequence = models.PositiveIntegerField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    # A worker sending it holds it until then; one that died lets it go when the time passes.
    leased_until = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="webhook_delivery_once")
        ]
        indexes = [
            models.Index(fields=["endpoint", "-created_at"], name="webhook_delivery_endpoint"),
            models.Index(
                fields=["endpoint", "subject_id", "sequence"],
                condition=models.Q(state="pending"),
                name="webhook_delivery_pending",
            ),
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(state="pending"),
                name="webhook_delivery_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.endpoint} ({self.state})"


class WebhookAttempt(models.Model):
    """One try at a delivery, as the receiver answered it (or did not)."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    started_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    # The start of the receiver's answer, for whoever debugs it.
    response_excerpt = models.TextField(blank=True)
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"{self.status_code or self.error} after {self.latency_ms} ms"

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
