from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from burki.text import validate_speakable


class Assistant(models.Model):
    organization = models.ForeignKey(
        "burki.Organization", on_delete=models.CASCADE, related_name="assistants"
    )
    name = models.CharField(max_length=200)
    welcome_message = models.TextField(
        blank=True,
        validators=[validate_speakable],
        help_text="Said when the call is answered, unless the request gives one.",
    )
    max_call_duration_seconds = models.PositiveIntegerField(
        default=600, help_text="No call with this assistant lasts longer, whatever the balance."
    )
    is_active = models.BooleanField(
        default=True, help_text="An inactive assistant takes no calls (the API answers 404)."
    )
    # What a voice assistant carries: LLM, voice, transcriber, prompts, tools.
    settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the voice assistant runs with, as a JSON object: its language model, "
        'voice, transcriber, prompts and tools, e.g. {"llm": {"model": "gpt-4o-mini"}}. Kept '
        "for the assistant's media stream (which finds it by assistant_id); placing a call does "
        "not read it. {} for none.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(max_call_duration_seconds__gte=60)
                & models.Q(max_call_duration_seconds__lte=86400),
                name="assistant_max_duration_range",
            ),
            models.UniqueConstraint(
                fields=["organization", "name"], name="assistant_name_unique_per_org"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk})"


class ConversationFlow(models.Model):
    organization = models.ForeignKey(
        "burki.Organization", on_delete=models.CASCADE, related_name="conversation_flows"
    )
    name = models.CharField(max_length=200)
    base_assistant = models.ForeignKey(
        Assistant, on_delete=models.PROTECT, related_name="conversation_flows"
    )
    definition = models.JSONField(
        default=dict,
        blank=True,
        help_text="The flow's graph as a JSON object, kept for the assistant's media stream "
        '(which finds it by conversation_flow_id), e.g. {"start": "greet"}.',
    )
    is_live = models.BooleanField(
        default=False, help_text="Only a live flow takes calls; a draft is resolved to no one."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"], name="flow_name_unique_per_org"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} (flow #{self.pk})"

    def clean(self) -> None:
        base = self.base_assistant if self.base_assistant_id else None
        if (
            base is not None
            and self.organization_id
            and base.organization_id != self.organization_id
        ):
            raise ValidationError(
                {"base_assistant": "The base assistant must belong to the same organization."}
            )
