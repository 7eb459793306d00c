from __future__ import annotations

import json
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from assistants.models import Assistant, ConversationFlow
from billing.models import Balance
from billing.services import balance_adjust, balance_top_up
from burki.models import ApiKey, Membership, Organization
from burki.services import api_key_create, api_key_revoke
from telephony.models import PhoneNumber, SipTrunk

DEMO_FUNDS_CENTS = 5_000  # $50.00 at the default 10 cents a minute: 500 minutes
DEMO_OPERATOR = "demo-operator"
DEMO_OWNER = "acme-owner"


def _assistant(org: Organization, name: str, welcome: str) -> Assistant:
    assistant, _ = Assistant.objects.update_or_create(
        organization=org,
        name=name,
        defaults={"welcome_message": welcome, "is_active": True, "max_call_duration_seconds": 600},
    )
    return assistant


def _number(org: Organization, number: str, **links: Any) -> PhoneNumber:
    defaults = {
        "organization": org,
        "provider": "sandbox",
        "provider_account": None,
        "assistant": None,
        "conversation_flow": None,
        **links,
    }
    phone_number, _ = PhoneNumber.objects.update_or_create(number=number, defaults=defaults)
    return phone_number


def _fresh_key(org: Organization) -> str:
    for old in ApiKey.objects.filter(organization=org, name="demo", revoked_at__isnull=True):
        api_key_revoke(api_key=old)
    return api_key_create(organization=org, name="demo")[1]


def _fund_to(org: Organization, target_cents: int) -> None:
    balance, _ = Balance.objects.get_or_create(organization=org)
    if balance.available_cents < target_cents:
        balance_top_up(
            organization=org, amount_cents=target_cents - balance.available_cents, memo="demo funds"
        )


def _drain(org: Organization) -> None:
    balance, _ = Balance.objects.get_or_create(organization=org)
    spare = balance.balance_cents - balance.held_cents
    if spare > 0:
        balance_adjust(organization=org, amount_cents=-spare, memo="demo: broke organization")


def _login(username: str, *, operator: bool) -> str:
    """A demo login with a fresh password, printed once: the demo only, never production."""
    password = secrets.token_urlsafe(12)
    user, _ = User.objects.get_or_create(username=username)
    user.is_staff, user.is_superuser, user.is_active = True, operator, True
    user.set_password(password)
    user.save()
    return password


def _sip_number(org: Organization, gateway: str) -> PhoneNumber:
    trunk, _ = SipTrunk.objects.update_or_create(
        organization=org,
        name="Acme demo trunk",
        defaults={"gateway": gateway, "transport": "udp", "priority": 10, "enabled": True},
    )
    try:
        trunk.full_clean()
    except ValidationError as exc:
        raise CommandError(f"--sip-gateway: {'; '.join(exc.messages)}") from None
    assistant = _assistant(org, "Acme SIP", "Hello, Acme calling over our own SIP trunk.")
    return _number(org, "+15551234570", label="Acme SIP", provider="sip", assistant=assistant)


class Command(BaseCommand):
    help = (
        "Create or refresh the demo data set (sandbox provider) and print its keys and ids. With "
        "DEBUG on, also an admin login for a platform operator and one for Acme's owner, with "
        "fresh passwords."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")
        parser.add_argument(
            "--sip-gateway",
            metavar="HOST:PORT",
            help="Also give Acme a SIP trunk to this gateway and a number on it "
            "(sip_phone_number); calls from it go through `manage.py sip_agent`.",
        )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        acme, _ = Organization.objects.get_or_create(name="Acme")
        support = _assistant(acme, "Acme Support", "Hi, this is Acme support calling.")
        sales = _assistant(acme, "Acme Sales", "Hello from Acme sales!")
        triage = _assistant(acme, "Acme Triage", "Hi, Acme here. Let me find the right person.")
        flow, _ = ConversationFlow.objects.update_or_create(
            organization=acme,
            name="Acme appointment flow",
            defaults={"base_assistant": triage, "is_live": True, "definition": {"start": "greet"}},
        )
        main = _number(acme, "+15551234567", label="Acme main", assistant=support)
        flow_number = _number(acme, "+15551234568", label="Acme flow", conversation_flow=flow)
        spare = _number(acme, "+15551234569", label="Acme unassigned")
        _fund_to(acme, DEMO_FUNDS_CENTS)

        globex, _ = Organization.objects.get_or_create(name="Globex")
        globex_assistant = _assistant(globex, "Globex Assistant", "Globex calling.")
        foreign = _number(globex, "+15557654321", label="Globex main", assistant=globex_assistant)
        _fund_to(globex, DEMO_FUNDS_CENTS)

        initech, _ = Organization.objects.get_or_create(name="Initech")
        initech_assistant = _assistant(initech, "Initech Assistant", "Initech calling.")
        broke = _number(initech, "+15550001111", label="Initech main", assistant=initech_assistant)
        _drain(initech)

        data = {
            "api_key": _fresh_key(acme),
            "from_phone_number": str(main.number),
            "assistant_id": support.pk,
            "other_assistant_id": sales.pk,
            "flow_phone_number": str(flow_number.number),
            "flow_base_assistant_id": triage.pk,
            "unassigned_phone_number": str(spare.number),
            "foreign_phone_number": str(foreign.number),
            "foreign_assistant_id": globex_assistant.pk,
            "broke_api_key": _fresh_key(initech),
            "broke_phone_number": str(broke.number),
        }
        if settings.DEBUG:
            # Logins with known passwords exist only where DEBUG says this is not production.
            data["admin_username"] = DEMO_OPERATOR
            data["admin_password"] = _login(DEMO_OPERATOR, operator=True)
            data["member_username"] = DEMO_OWNER
            data["member_password"] = _login(DEMO_OWNER, operator=False)
            Membership.objects.update_or_create(
                user=User.objects.get(username=DEMO_OWNER),
                organization=acme,
                defaults={"role": Membership.Role.OWNER},
            )
        if options["sip_gateway"]:
            data["sip_phone_number"] = str(_sip_number(acme, options["sip_gateway"]).number)
        if options["json"]:
            self.stdout.write(json.dumps(data))
        else:
            for key, value in data.items():
                self.stdout.write(f"{key}: {value}")
