"""Campaigns: a list of recipients called through `call_initiate`, paced, within each
recipient's calling window, retried on the outcomes the campaign names (campaigns.services)."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SCHEDULED = "scheduled", "Scheduled"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    CANCELED = "canceled", "Canceled"


class RecipientState(models.TextChoices):
    QUEUED = "queued", "Queued"  # its next attempt waits for its time, its window, a slot
    RETRY_WAIT = "retry_wait", "Waiting to retry"
    DIALING = "dialing", "Dialing"  # claimed by a worker, being placed
    CALLING = "calling", "Calling"  # placed, its call not over yet
    DONE = "done", "Done"
    CANCELED = "canceled", "Canceled"


# What a worker may still do something with.
ACTIVE_STATES = [
    RecipientState.QUEUED,
    RecipientState.RETRY_WAIT,
    RecipientState.DIALING,
    RecipientState.CALLING,
]
# Holding one of the campaign's simultaneous calls.
IN_FLIGHT_STATES = [RecipientState.DIALING, RecipientState.CALLING]


class Outcome(models.TextChoices):
    """How an attempt ended: the call's own final status as its provider reported it, `machine`
    when the call asked for answering-machine detection and a machine (or a fax) answered, or
    why nothing was dialled. `campaigns.services.outcome_of_call` says which calls earn which."""

    COMPLETED = "completed", "Completed"
    BUSY = "busy", "Busy"
    NO_ANSWER = "no-answer", "No answer"
    MACHINE = "machine", "Answered by a machine (or a fax)"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"
    DO_NOT_CALL = "do-not-call", "On the do-not-call list (not dialled)"
    NO_WINDOW = "no-window", "Its calling window never opens (not dialled)"
    REFUSED = "refused", "Refused before dialling (e.g. no assistant, no balance)"


# The outcomes a campaign's retry rule may name in `on`: those of a placed call that did not
# reach the recipient (a conversation that happened, or one we ended, is not retried).
NOT_RETRIED = {
    Outcome.COMPLETED,
    Outcome.CANCELED,
    Outcome.DO_NOT_CALL,
    Outcome.NO_WINDOW,
    Outcome.REFUSED,
}
RETRYABLE = [outcome for outcome in Outcome if outcome not in NOT_RETRIED]

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Campaign(models.Model):
    # A UUID: it is the subject of the campaign's webhook events, as a call's id is of its own.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        "burki.Organization", on_delete=models.CASCADE, related_name="campaigns"
    )
    name = models.CharField(max_length=200)
    status = models.CharField(
        max_length=10, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT
    )
    # The organization's numbers to call from, in E.164, used in turn (one: always that one).
    from_numbers = models.JSONField(default=list)
    assistant = models.ForeignKey(
        "assistants.Assistant", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    welcome_message = models.TextField(null=True, blank=True)  # noqa: DJ001 (null: the default)
    agenda = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Answering-machine detection for every call, as POST /calls/initiate's `voicemail` takes
    # it (`{"detect": true, "on_machine": ..., "message": ...}`); null: not asked.
    voicemail = models.JSONField(null=True, blank=True)
    calls_per_second = models.DecimalField(
        max_digits=7,
        decimal_places=2,
        default=Decimal(1),
        validators=[MinValueValidator(Decimal("0.01")), MaxValueValidator(Decimal(1000))],
    )
    max_concurrent_calls = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1)]
    )
    # The calling window, in each recipient's local time (null: any time).
    window_start = models.TimeField(null=True, blank=True)
    window_end = models.TimeField(null=True, blank=True)
    window_days = models.JSONField(default=list, blank=True)  # of WEEKDAYS; empty: every day
    retry_max_attempts = models.PositiveSmallIntegerField(default=1)
    retry_on = models.JSONField(default=list, blank=True)  # of RETRYABLE
    retry_backoff_seconds = models.JSONField(default=list, blank=True)
    start_at = models.DateTimeField(null=True, blank=True)
    # Recipients holding one of the campaign's simultaneous calls (dialing or calling): changed
    # only with their state, in the same transaction, so it is the cap's exact count.
    in_flight = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="campaign_org_created"),
            models.Index(fields=["status"], name="campaign_status"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def has_window(self) -> bool:
        return self.window_start is not None and self.window_end is not None


class Recipient(models.Model):
    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="recipients", db_index=False
    )
    # Its place in the list as given (the line of its upload, 1 for the first JSON item).
    position = models.PositiveIntegerField()
    to_number = models.CharField(max_length=20)
    variables = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # The IANA zones its number may be in (phonenumbers), comma-separated.
    time_zones = models.TextField()
    state = models.CharField(
        max_length=10, choices=RecipientState.choices, default=RecipientState.QUEUED
    )
    outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)  # begun so far
    # When it may be tried next (its window may hold it back further when that comes).
    next_attempt_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_call = models.ForeignKey(
        "calls.Call", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "id"]
        indexes = [
            # The claim: a campaign's due recipients, in the order they come due.
            models.Index(
                fields=["campaign", "next_attempt_at", "position"],
                condition=models.Q(state__in=["queued", "retry_wait"]),
                name="recipient_due",
            ),
            models.Index(fields=["campaign", "state", "position"], name="recipient_state"),
            models.Index(fields=["campaign", "to_number"], name="recipient_number"),
        ]

    def __str__(self) -> str:
        return self.to_number


class Attempt(models.Model):
    """One try at a recipient: its number is part of the idempotency key its call is placed
    with, so a worker that dies mid-dial cannot make a second call for the same attempt."""

    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="attempt_set")
    number = models.PositiveSmallIntegerField()
    call = models.ForeignKey(
        "calls.Call", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["recipient", "number"]
        constraints = [
            models.UniqueConstraint(fields=["recipient", "number"], name="attempt_unique")
        ]
        indexes = [models.Index(fields=["started_at"], name="attempt_started")]

    def __str__(self) -> str:
        return f"{self.recipient_id} #{self.number}"
