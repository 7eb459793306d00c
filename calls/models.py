from __future__ import annotations

import uuid

from django.db import models

from telephony.states import FINAL_STATES, CallState


class Call(models.Model):
    # A UUID, not a sequence: call ids appear in webhook URLs and must not be guessable.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by call_org_created and call_org_status, which lead with it: one index fewer to
    # write on every insert and status change.
    organization = models.ForeignKey(
        "burki.Organization", on_delete=models.PROTECT, related_name="calls", db_index=False
    )
    phone_number = models.ForeignKey(
        "telephony.PhoneNumber", null=True, on_delete=models.SET_NULL, related_name="calls"
    )
    provider_account = models.ForeignKey(
        "telephony.ProviderAccount", null=True, on_delete=models.SET_NULL, related_name="calls"
    )
    from_number = models.CharField(max_length=20)
    to_number = models.CharField(max_length=20)
    assistant = models.ForeignKey(
        "assistants.Assistant", null=True, on_delete=models.SET_NULL, related_name="calls"
    )
    conversation_flow = models.ForeignKey(
        "assistants.ConversationFlow", null=True, on_delete=models.SET_NULL, related_name="calls"
    )
    provider = models.CharField(max_length=20)
    call_sid = models.CharField(max_length=128, blank=True, default="")
    status = models.CharField(max_length=20, choices=CallState.choices, default=CallState.QUEUED)
    welcome_message = models.TextField(blank=True)
    agenda = models.TextField(blank=True)
    variables = models.JSONField(default=dict, blank=True)
    time_limit_seconds = models.PositiveIntegerField()
    rate_cents_per_minute = models.PositiveIntegerField()
    hold_cents = models.BigIntegerField()
    duration_seconds = models.PositiveIntegerField(null=True, blank=True)
    cost_cents = models.BigIntegerField(null=True, blank=True)
    end_reason = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    initiated_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="call_org_created"),
            models.Index(fields=["organization", "status", "-created_at"], name="call_org_status"),
            models.Index(fields=["status", "created_at"], name="call_status_created"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "call_sid"],
                condition=~models.Q(call_sid=""),
                name="call_sid_unique_per_provider",
            ),
            models.CheckConstraint(condition=models.Q(hold_cents__gte=0), name="call_hold_gte_0"),
            models.CheckConstraint(
                condition=models.Q(cost_cents__isnull=True)
                | models.Q(cost_cents__lte=models.F("hold_cents")),
                name="call_cost_within_hold",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.from_number} → {self.to_number} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATES


class CallEvent(models.Model):
    """The call's timeline: every lifecycle event that moved it, in the order it arrived."""

    # Indexed by call_event_call_created, which leads with it.
    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="events", db_index=False)
    status = models.CharField(max_length=20, choices=CallState.choices)
    source = models.CharField(max_length=20)  # the provider, or "api" for our own steps
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["call", "created_at"], name="call_event_call_created")]

    def __str__(self) -> str:
        return f"{self.call_id}: {self.status}"
