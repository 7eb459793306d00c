from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from burki.errors import DomainError
from burki.exceptions import first_error_message
from calls.apis import InitiateCallApi
from calls.permissions import caller_refusal
from calls.selectors import caller_named
from calls.services import call_initiate, call_initiated_body


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
            raise CommandError(first_error_message(serializer.errors))
        data = serializer.validated_data

        caller = caller_named(
            number=data["from_phone_number"], assistant_id=data.get("assistant_id")
        )
        # A command has no API key: it acts for the organization that owns the number.
        owner_id = caller.phone_number.organization_id if caller.phone_number else None
        refusal = caller_refusal(caller, organization_id=owner_id)
        if refusal is not None:
            raise CommandError(refusal)
        assert caller.phone_number is not None  # a number of no one was refused above
        try:
            call = call_initiate(
                organization=caller.phone_number.organization,
                phone_number=caller.phone_number,
                to_number=data["to_phone_number"],
                assistant_override=caller.assistant,
                welcome_message=data.get("welcome_message"),
                agenda=data.get("agenda"),
                variables=data.get("variables"),
            )
        except DomainError as exc:
            raise CommandError(exc.message) from None
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
