from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.exceptions import APIException

from burki.errors import DomainError
from burki.exceptions import first_error_message, status_of_error
from calls.apis import InitiateCallApi
from calls.errors import number_not_in_organization
from calls.selectors import caller_assistant, caller_phone_number
from calls.services import call_initiate, call_initiated_body
from telephony.models import PhoneNumber


def _variable(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--var takes key=value, not {text!r}")
    return name, value


class Command(BaseCommand):
    help = (
        "Place a call through the same service as POST /calls/initiate, as the organization that "
        "owns --from, and print the outcome."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="from_phone_number", required=True)
        parser.add_argument("--to", dest="to_phone_number", required=True)
        parser.add_argument("--assistant", dest="assistant_id", type=int)
        parser.add_argument("--welcome", dest="welcome_message")
        parser.add_argument("--agenda")
        parser.add_argument(
            "--var", dest="variables", action="append", default=[], metavar="KEY=VALUE"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            variables = dict(_variable(item) for item in options["variables"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        payload = {
            key: options[key]
            for key in (
                "from_phone_number",
                "to_phone_number",
                "assistant_id",
                "welcome_message",
                "agenda",
            )
            if options[key] is not None
        }
        if variables:
            payload["variables"] = variables
        serializer = InitiateCallApi.InputSerializer(data=payload)
        if not serializer.is_valid():
            raise CommandError(f"400: {first_error_message(serializer.errors)}")
        data = serializer.validated_data

        # A command has no API key: it acts for the organization that owns the number.
        owner = (
            PhoneNumber.objects.filter(number=data["from_phone_number"])
            .values_list("organization", flat=True)
            .first()
        )
        if owner is None:
            number = data["from_phone_number"]
            raise CommandError(f"403: {number_not_in_organization(number)}")
        try:
            phone_number = caller_phone_number(
                organization_id=owner, number=data["from_phone_number"]
            )
            assistant = (
                caller_assistant(organization_id=owner, assistant_id=data["assistant_id"])
                if data.get("assistant_id") is not None
                else None
            )
            call = call_initiate(
                organization=phone_number.organization,
                phone_number=phone_number,
                to_number=data["to_phone_number"],
                assistant_override=assistant,
                welcome_message=data.get("welcome_message"),
                agenda=data.get("agenda"),
                variables=data.get("variables"),
            )
        except APIException as exc:
            raise CommandError(f"{exc.status_code}: {first_error_message(exc.detail)}") from None
        except DomainError as exc:
            raise CommandError(f"{status_of_error(exc)}: {exc.message}") from None
        self.stdout.write(
            json.dumps(
                {
                    **call_initiated_body(call),
                    "provider": call.provider,
                    "assistant_id": call.assistant_id,
                    "time_limit_seconds": call.time_limit_seconds,
                    "welcome_message": call.welcome_message,
                }
            )
        )
