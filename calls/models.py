from __future__ import annotations

import uuid

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from telephony.states import FINAL_STATES, AnsweredBy, CallState

LIVE_STATES = [state.value for state in CallState if state not in FINAL_STATES]


class Settlement(models.TextChoices):
    """Where the billed seconds of a finished call came from."""

    PROVIDER = "provider", "The provider's own record"
    WEBHOOK = "webhook", "The provider's webhook"
    AGENT = "agent", "The SIP agent's measurement"
    ESTIMATE = "estimate", "The sweep's rule: the provider never told (review it)"


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
    # The customer's own keys and values (POST /calls/initiate), carried in every event.
    metadata = models.JSONField(default=dict, blank=True)
    # Answering-machine detection as asked for (POST /calls/initiate's `voicemail`: `on_machine`
    # and the rendered `message`); null when it was not.
    voicemail = models.JSONField(null=True, blank=True)
    # The provider's verdict on who answered; null until it comes, or when detection was not
    # asked for.
    answered_by = models.CharField(  # noqa: DJ001 (null means "not asked, or not told yet")
        max_length=10, choices=AnsweredBy.choices, null=True, blank=True
    )
    # POST /calls/{call_id}/transfer: where the callee was sent, and when. The call stays one
    # call, billed until its provider reports the end.
    # A default in the database too: a process still running the previous release, which
    # knows nothing of this column, can go on recording calls during a deploy.
    transferred_to = models.CharField(max_length=20, blank=True, default="", db_default="")
    transferred_at = models.DateTimeField(null=True, blank=True)
    time_limit_seconds = models.PositiveIntegerField()
    rate_cents_per_minute = models.PositiveIntegerField()
    hold_cents = models.BigIntegerField()
    duration_seconds = models.PositiveIntegerField(null=True, blank=True)
    cost_cents = models.BigIntegerField(null=True, blank=True)
    end_reason = models.CharField(max_length=200, blank=True)
    # Set when the money is settled (null until then, like cost_cents): what the billed
    # seconds rest on.
    settled_by = models.CharField(  # noqa: DJ001 (null means "not settled", "" nothing)
        max_length=10, choices=Settlement.choices, null=True, blank=True
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    initiated_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # When the call can no longer be live, final webhook or not: its ring time and time limit
    # (which the provider enforces) have passed. Until then it counts against the cap on
    # simultaneous calls.
    live_until = models.DateTimeField(null=True, blank=True)
    # For a provider that `reports_liveness` (SIP): when its carrier last said the call was up.
    # A carrier that dies mid-call (a SIP agent killed) leaves the moment it last talked.
    last_heard_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="call_org_created"),
            models.Index(fields=["organization", "status", "-created_at"], name="call_org_status"),
            models.Index(fields=["status", "created_at"], name="call_status_created"),
            models.Index(
                fields=["organization", "live_until"],
                condition=models.Q(cost_cents__isnull=True),
                name="call_org_live",
            ),
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
    # Who reported it: the provider's name (its webhook, the sandbox's script, the SIP agent),
    # or "reconcile" when reconcile_calls adopted the provider's call.
    source = models.CharField(max_length=20)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["call", "created_at"], name="call_event_call_created")]

    def __str__(self) -> str:
        return f"{self.call_id}: {self.status}"


class IdempotencyKey(models.Model):
    """A client's `Idempotency-Key` on POST /calls/initiate, and the answer it got.

    The unique constraint is the lock: the first request to insert the row owns the key; any
    other request with the same key finds the row and gets the stored answer, a 409 while the
    first is still running, or a 422 when its body differs.
    """

    class Status(models.TextChoices):
        IN_FLIGHT = "in_flight", "In flight"
        DONE = "done", "Done"

    organization = models.ForeignKey(
        "burki.Organization", on_delete=models.CASCADE, related_name="idempotency_keys"
    )
    key = models.CharField(max_length=255)
    # SHA-256 of the canonical JSON of the validated request.
    fingerprint = models.CharField(max_length=64)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.IN_FLIGHT)
    # The call this request recorded (set in the same transaction), so a request that died
    # half-way can still be answered from what really happened.
    call = models.ForeignKey(
        Call, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "key"], name="idempotency_key_unique_per_org"
            )
        ]
        indexes = [models.Index(fields=["expires_at"], name="idempotency_key_expires")]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


class DoNotCallNumber(models.Model):
    """A number the organization must never dial: checked before every dial, by
    `POST /calls/initiate` and by campaigns alike (calls.do_not_call)."""

    organization = models.ForeignKey(
        "burki.Organization", on_delete=models.CASCADE, related_name="do_not_call_numbers"
    )
    number = models.CharField(max_length=20, help_text="E.164, e.g. +15551234567.")
    # Who put it there, in words: "API key <name>", "admin user <username>", "CSV import by …".
    added_by = models.CharField(max_length=200)
    reason = models.CharField(max_length=200, blank=True)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "do-not-call number"
        ordering = ["organization__name", "number"]
        constraints = [
            # Also the index every dial's check reads.
            models.UniqueConstraint(
                fields=["organization", "number"], name="do_not_call_unique_per_org"
            )
        ]

    def __str__(self) -> str:
        return self.number
