"""factory-boy factories. SubFactories keep every foreign key inside one organization."""

from __future__ import annotations

import factory

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
