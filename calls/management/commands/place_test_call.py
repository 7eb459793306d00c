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

# The API's field names as this command's options, for its error sentences.
OPTIONS = {
    "from_phone_number": "--from",
    "to_phone_number": "--to",
    "assistant_id": "--assistant",
    "welcome_message": "--welcome",
    "agenda": "--agenda",
    "variables": "--var",
}


def _variable(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--var takes NAME=VALUE, not {text!r}")
    return name, value


def _as_options(sentence: str) -> str:
    """An API sentence about a field, about the option instead (`--from must be ...`)."""
    for field, option in OPTIONS.items():
        if sentence.startswith(field):
            return option + sentence[len(field) :]
    return sentence


class Command(BaseCommand):
    help = (
        "Place a call through the same service as POST /calls/initiate, as the organization that "
        "owns --from, and print the outcome as JSON. Money is held and the call placed exactly "
        "as through the API (the sandbox dials no one)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--from",
            dest="from_phone_number",
            required=True,
            metavar="NUMBER",
            help="The number to call from, in E.164 (+15551234567): one of an organization's "
            "numbers in the admin. The call is that organization's.",
        )
        parser.add_argument(
            "--to",
            dest="to_phone_number",
            required=True,
            metavar="NUMBER",
            help="Who to call, in E.164.",
        )
        parser.add_argument(
            "--assistant",
            dest="assistant_id",
            type=int,
            metavar="ID",
            help="Use this assistant (of the same organization) instead of the number's own.",
        )
        parser.add_argument(
            "--welcome",
            dest="welcome_message",
            metavar="TEXT",
            help="What the assistant says first; {{name}} placeholders are filled from --var.",
        )
        parser.add_argument(
            "--agenda",
            metavar="TEXT",
            help="The goal of the call, for the assistant; {{name}} placeholders allowed.",
        )
        parser.add_argument(
            "--var",
            dest="variables",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="A variable for the placeholders; repeat it for more (--var name=Ann "
            "--var time=10am).",
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
            raise CommandError(_as_options(first_error_message(serializer.errors)))
        data = serializer.validated_data

        caller = caller_named(
            number=data["from_phone_number"], assistant_id=data.get("assistant_id")
        )
        # A command has no API key: it acts for the organization that owns the number, so the
        # API's "does not belong to your organization" would say nothing here.
        number = caller.phone_number
        if number is None:
            raise CommandError(
                f"--from {caller.number}: no organization has this number. Add it in the admin "
                "(Telephony → Phone numbers) first."
            )
        # The API's own rule decides; with the number its owner's, only the assistant is left
        # for it to refuse.
        if caller_refusal(caller, organization_id=number.organization_id) is not None:
            raise CommandError(
                f"--assistant {caller.assistant_id}: {number.organization} (which owns "
                f"{caller.number}) has no assistant with this id."
            )
        try:
            call = call_initiate(
                organization=number.organization,
                phone_number=number,
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
