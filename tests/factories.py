"""factory-boy factories. SubFactories keep every foreign key inside one organization."""

from __future__ import annotations

import base64
from decimal import Decimal
from functools import cache

import factory
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from assistants.models import Assistant, ConversationFlow
from billing.models import Balance
from burki.models import Organization
from telephony.models import PhoneNumber, ProviderAccount, SipTrunk


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Org {n}")


class BalanceFactory(factory.django.DjangoModelFactory):
    """A balance set directly. Tests of the ledger fund through billing.services instead."""

    class Meta:
        model = Balance
        django_get_or_create = ["organization"]

    organization = factory.SubFactory(OrganizationFactory)
    balance_cents = 10_000
    held_cents = 0


class AssistantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Assistant

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Assistant {n}")
    welcome_message = "Hello, this is your assistant."
    max_call_duration_seconds = 600


class ConversationFlowFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConversationFlow

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Flow {n}")
    base_assistant = factory.SubFactory(
        AssistantFactory, organization=factory.SelfAttribute("..organization")
    )
    is_live = True
    definition = factory.LazyFunction(lambda: {"start": "greet"})


class ProviderAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProviderAccount

    organization = factory.SubFactory(OrganizationFactory)
    provider = "twilio"
    name = factory.Sequence(lambda n: f"Account {n}")
    settings = factory.LazyFunction(lambda: {"account_sid": "AC" + "a" * 32})
    secrets = factory.LazyFunction(lambda: {"auth_token": "twilio-auth-token-0123456789abcdef"})
    # Out of the way of tests that place calls in bursts; the pacing tests set their own.
    calls_per_second = Decimal(1000)


@cache
def telnyx_signing_key() -> ed25519.Ed25519PrivateKey:
    """Plays Telnyx's webhook signing key; its public half goes in the account."""
    return ed25519.Ed25519PrivateKey.generate()


def telnyx_public_key() -> str:
    raw = (
        telnyx_signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode()


@cache
def vonage_private_key() -> rsa.RSAPrivateKey:
    """A Vonage application's key pair, made here: the SDK signs its API tokens with it."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def vonage_private_key_pem() -> str:
    return (
        vonage_private_key()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


TELNYX_CONNECTION_ID = "1684641123236054244"
TELNYX_API_KEY = "KEY0123456789ABCDEF_telnyx-test"
VONAGE_APPLICATION_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
VONAGE_SIGNATURE_SECRET = "vonage-signature-secret-0123456789abcdef"


class SipTrunkFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SipTrunk

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Trunk {n}")
    gateway = "127.0.0.1:5060"
    transport = "udp"
    priority = factory.Sequence(lambda n: n)


class PhoneNumberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PhoneNumber

    organization = factory.SubFactory(OrganizationFactory)
    number = factory.Sequence(lambda n: f"+1555{2000000 + n:07d}")
    provider = "sandbox"
    provider_account = None
    assistant = factory.SubFactory(
        AssistantFactory, organization=factory.SelfAttribute("..organization")
    )
    conversation_flow = None

    class Params:
        twilio = factory.Trait(
            provider="twilio",
            provider_account=factory.SubFactory(
                ProviderAccountFactory, organization=factory.SelfAttribute("..organization")
            ),
        )
        telnyx = factory.Trait(
            provider="telnyx",
            provider_account=factory.SubFactory(
                ProviderAccountFactory,
                organization=factory.SelfAttribute("..organization"),
                provider="telnyx",
                settings=factory.LazyFunction(
                    lambda: {
                        "connection_id": TELNYX_CONNECTION_ID,
                        "public_key": telnyx_public_key(),
                    }
                ),
                secrets=factory.LazyFunction(lambda: {"api_key": TELNYX_API_KEY}),
            ),
        )
        vonage = factory.Trait(
            provider="vonage",
            provider_account=factory.SubFactory(
                ProviderAccountFactory,
                organization=factory.SelfAttribute("..organization"),
                provider="vonage",
                settings=factory.LazyFunction(lambda: {"application_id": VONAGE_APPLICATION_ID}),
                secrets=factory.LazyFunction(
                    lambda: {
                        "private_key": vonage_private_key_pem(),
                        "signature_secret": VONAGE_SIGNATURE_SECRET,
                    }
                ),
            ),
        )
