from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from burki.crypto import EncryptedJSONField, EncryptedTextField
from telephony.e164 import E164PhoneNumberField
from telephony.providers import get_provider, provider_choices
from telephony.providers.base import Account
from telephony.sip.numbers import CallerIdFormat, parse_gateway

# Calls a second each carrier takes from one account before it queues or refuses them: Twilio
# queues beyond 1 a second by default, Vonage refuses beyond 3, Telnyx refuses outbound calls
# beyond 20 a second by default (503 "CPS Limit reached"; its limit of simultaneous channels,
# 2 to 10 on a new account, usually binds first). An account with a higher agreed limit sets its
# own `calls_per_second`. A provider not listed (the sandbox, SIP trunks) is not paced.
DEFAULT_CALLS_PER_SECOND: dict[str, Decimal] = {
    "twilio": Decimal(1),
    "vonage": Decimal(3),
    "telnyx": Decimal(20),
}


class ProviderAccount(models.Model):
    """An organization's account with a telephony provider.

    `settings` holds what is not secret (Twilio's account SID, Telnyx's connection id, a public
    key); `secrets` holds tokens and private keys, encrypted at rest and never shown back.
    """

    organization = models.ForeignKey(
        "burki.Organization", on_delete=models.CASCADE, related_name="provider_accounts"
    )
    provider = models.CharField(max_length=20, choices=provider_choices)
    name = models.CharField(max_length=100)
    settings = models.JSONField(default=dict, blank=True)
    secrets = EncryptedJSONField(blank=True, editable=False)
    calls_per_second = models.DecimalField(
        max_digits=7,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0.01"))],
        help_text="Calls a second placed through this account, by the API and campaigns together "
        "(blank: the carrier's default, Twilio 1, Vonage 3, Telnyx 20).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"], name="provider_account_name_unique_per_org"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_provider_display()})"

    @property
    def effective_calls_per_second(self) -> Decimal | None:
        """What dialling through this account is paced to (None: not paced)."""
        if self.calls_per_second is not None:
            return self.calls_per_second
        return DEFAULT_CALLS_PER_SECOND.get(self.provider)

    def as_account(self) -> Account:
        return Account(settings=dict(self.settings), secrets=dict(self.secrets))


def provider_credentials(provider_account: ProviderAccount | None) -> Account:
    """What a provider is handed: the account's settings and secrets, or nothing when the
    provider needs no account (sandbox, SIP trunks) or the account is gone."""
    return provider_account.as_account() if provider_account is not None else Account()


class PhoneNumber(models.Model):
    organization = models.ForeignKey(
        "burki.Organization", on_delete=models.CASCADE, related_name="phone_numbers"
    )
    number = E164PhoneNumberField(unique=True, help_text="E.164, e.g. +15551234567.")
    label = models.CharField(max_length=100, blank=True)
    provider = models.CharField(
        max_length=20,
        choices=provider_choices,
        default="sandbox",
        help_text="Who dials calls from this number. Twilio, Telnyx and Vonage need a provider "
        "account of the organization; BYO SIP trunk, an enabled SIP trunk.",
    )
    provider_account = models.ForeignKey(
        ProviderAccount,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="phone_numbers",
        help_text="The account this number dials through (not needed for the sandbox).",
    )
    assistant = models.ForeignKey(
        "assistants.Assistant",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="phone_numbers",
        help_text="Takes the calls from this number when the request names no assistant.",
    )
    conversation_flow = models.ForeignKey(
        "assistants.ConversationFlow",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="phone_numbers",
        help_text="Instead of an assistant: while the flow is live, its base assistant takes "
        "the calls.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(assistant__isnull=True)
                | models.Q(conversation_flow__isnull=True),
                name="phone_number_assistant_or_flow",
                violation_error_message="A number goes to an assistant or a flow, not both.",
            )
        ]

    def __str__(self) -> str:
        return str(self.number)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        org_id = self.organization_id
        assistant = self.assistant if self.assistant_id else None
        flow = self.conversation_flow if self.conversation_flow_id else None
        if assistant is not None and assistant.organization_id != org_id:
            errors["assistant"] = "The assistant must belong to the number's organization."
        if flow is not None and flow.organization_id != org_id:
            errors["conversation_flow"] = "The flow must belong to the number's organization."
        if self.assistant_id and self.conversation_flow_id:
            errors["conversation_flow"] = "A number goes to an assistant or a flow, not both."
        account = self.provider_account if self.provider_account_id else None
        if account is not None:
            if account.organization_id != org_id:
                errors["provider_account"] = "The account must belong to the number's organization."
            elif account.provider != self.provider:
                errors["provider_account"] = f"This is a {account.get_provider_display()} account."
        elif self.provider and not get_provider(self.provider).account_optional:
            errors["provider_account"] = "Numbers on this provider need a provider account."
        if (
            self.provider == "sip"
            and org_id
            and not SipTrunk.objects.filter(organization_id=org_id, enabled=True).exists()
        ):
            errors["provider"] = "Add an enabled SIP trunk for the organization first."
        if errors:
            raise ValidationError(errors)


class SipTrunk(models.Model):
    """An organization's own carrier or PBX, reached by the SIP agent (`manage.py sip_agent`).

    Numbers with provider `sip` dial through their organization's enabled trunks, lowest priority
    first, moving to the next trunk on a trunk-level failure (408/500/502/503/504, no response
    from the gateway at all, a transport error) before anyone's phone rang.
    """

    class Transport(models.TextChoices):
        UDP = "udp", "UDP"
        TCP = "tcp", "TCP"

    organization = models.ForeignKey(
        "burki.Organization", on_delete=models.CASCADE, related_name="sip_trunks"
    )
    name = models.CharField(max_length=100)
    gateway = models.CharField(
        max_length=255,
        help_text="host[:port] of the carrier's or PBX's SIP gateway, e.g. sip.example.net:5060.",
    )
    transport = models.CharField(max_length=3, choices=Transport.choices, default=Transport.UDP)
    username = models.CharField(
        max_length=100, blank=True, help_text="For digest authentication; blank: IP-authenticated."
    )
    password = EncryptedTextField(blank=True, editable=False)
    registers = models.BooleanField(
        default=False, help_text="Keep a REGISTER going with the gateway while the agent runs."
    )
    priority = models.PositiveSmallIntegerField(default=10, help_text="Lower is tried first.")
    enabled = models.BooleanField(default=True)
    caller_id_format = models.CharField(
        max_length=12,
        choices=CallerIdFormat.choices,
        default=CallerIdFormat.E164,
        help_text="How numbers are written in the From (caller ID) and the Request-URI.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "SIP trunk"
        ordering = ["organization__name", "priority", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"], name="sip_trunk_name_unique_per_org"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.gateway})"

    def clean(self) -> None:
        if not self.gateway:
            return  # the field's own "cannot be blank" says it
        try:
            parse_gateway(self.gateway)
        except ValueError as exc:
            raise ValidationError({"gateway": str(exc)}) from None
