from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models


class Organization(models.Model):
    name = models.CharField(max_length=200, unique=True)
    # Overrides CALL_RATE_CENTS_PER_MINUTE for this organization when set.
    rate_cents_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        verbose_name="rate (cents per minute)",
        help_text="What a minute of a call costs, in cents, billed per second; empty: the "
        "default (CALL_RATE_CENTS_PER_MINUTE).",
    )
    # Overrides MAX_CONCURRENT_CALLS for this organization when set.
    max_concurrent_calls = models.PositiveIntegerField(
        null=True,
        blank=True,
        verbose_name="simultaneous calls",
        help_text="How many calls may be in progress at once; empty: the default "
        "(MAX_CONCURRENT_CALLS).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(rate_cents_per_minute__isnull=True)
                | models.Q(rate_cents_per_minute__gt=0),
                name="organization_rate_positive",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_rate_cents_per_minute(self) -> int:
        return self.rate_cents_per_minute or settings.CALL_RATE_CENTS_PER_MINUTE

    @property
    def effective_max_concurrent_calls(self) -> int:
        if self.max_concurrent_calls is not None:
            return self.max_concurrent_calls
        return settings.MAX_CONCURRENT_CALLS


class ApiKey(models.Model):
    """A bearer key. Only its prefix (to find it) and SHA-256 (to check it) are stored."""

    PREFIX_LENGTH = 12

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=PREFIX_LENGTH, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @staticmethod
    def hash(raw_key: str) -> str:
        # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
        return hashlib.sha256(raw_key.encode()).hexdigest()


class Membership(models.Model):
    """A user's place in an organization's admin. Superusers (platform operators) need none."""

    class Role(models.TextChoices):
        OWNER = "owner", "Owner: everything of the organization, API keys and members included"
        MEMBER = "member", "Member: numbers, assistants, flows, provider accounts, SIP trunks"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization__name", "user__username"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "organization"], name="membership_one_per_user_and_org"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"
