"""The OpenAPI declarations of the campaigns API and the do-not-call list (drf-spectacular)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers

from burki.schema import (
    AUTHENTICATION_ERRORS,
    BAD_CURSOR,
    RETRY_AFTER,
    WWW_AUTHENTICATE,
    ErrorSerializer,
    SerializerClass,
    error_response,
    method_not_allowed,
    rate_limited,
)
from calls.errors import MachineDetectionUnsupported

NOT_FOUND = {
    404: error_response(
        "No campaign with this id in your organization.", ("Unknown campaign", "Not found.")
    )
}


class RowErrorSerializer(serializers.Serializer):
    line = serializers.IntegerField(
        help_text="The row's line: in a CSV the file's line (the header is 1), in JSON the "
        "item's place in the list (the first is 1)."
    )
    reason = serializers.CharField(help_text="Why, in the words POST /calls/initiate uses.")


class RowsErrorSerializer(ErrorSerializer):
    """A list with bad rows: none of it was added."""

    rows = RowErrorSerializer(many=True, required=False)


BAD_ROWS = OpenApiResponse(
    response=RowsErrorSerializer,
    description=(
        "A field is invalid, or some recipient rows are: then `rows` names every bad line and "
        "why, and no recipient of the request was added (all or nothing: fix the lines and "
        "send the whole list again)."
    ),
    examples=[
        OpenApiExample(
            "Bad rows",
            value={
                "detail": "line 3: to_phone_number must be a phone number in E.164 format, e.g. "
                "+15551234567 (and 1 more bad rows); no recipient was added.",
                "rows": [
                    {
                        "line": 3,
                        "reason": "to_phone_number must be a phone number in E.164 format, "
                        "e.g. +15551234567",
                    },
                    {
                        "line": 7,
                        "reason": "Variable 'name' is used in welcome_message but was not "
                        "supplied in variables.",
                    },
                ],
            },
            response_only=True,
        )
    ],
)

CONFLICT = {
    409: error_response(
        "The campaign's status does not allow this.",
        ("Not a draft", "A running campaign cannot be started."),
    )
}


def list_campaigns(*, item: SerializerClass) -> Any:
    return extend_schema(
        operation_id="campaigns_list",
        summary="List campaigns",
        description="Your organization's campaigns, newest first, a page at a time.",
        tags=["campaigns"],
        parameters=[WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            200: item(many=True),
            **AUTHENTICATION_ERRORS,
            **BAD_CURSOR,
            429: rate_limited(),
        },
    )


def create_campaign(*, request: SerializerClass, response: SerializerClass) -> Any:
    return extend_schema(
        operation_id="campaigns_create",
        summary="Create a campaign",
        description=(
            "A draft campaign: who to call (up to 10,000 recipients here, more with "
            "`POST /campaigns/{campaign_id}/recipients`), from which of your numbers, how fast "
            "(`calls_per_second`, and never more than the provider account's own), how many at "
            "once, in which local hours (`calling_window`, in each recipient's time zone), "
            "whether each call asks who answers (`voicemail`, as `POST /calls/initiate` takes "
            "it: an attempt a machine or a fax answered ends `machine`) and how to retry. Start "
            "it with `POST /campaigns/{campaign_id}/start`."
        ),
        tags=["campaigns"],
        request=request,
        parameters=[WWW_AUTHENTICATE, RETRY_AFTER],
        examples=[
            OpenApiExample(
                "Reminders",
                value={
                    "name": "Appointment reminders",
                    "from_phone_number": "+15551234567",
                    "welcome_message": "Hello {{name}}, a reminder about tomorrow.",
                    "calls_per_second": "1",
                    "max_concurrent_calls": 5,
                    "calling_window": {
                        "start": "09:00",
                        "end": "20:00",
                        "days": ["mon", "tue", "wed", "thu", "fri"],
                    },
                    "retry": {
                        "max_attempts": 3,
                        "on": ["busy", "no-answer"],
                        "backoff_seconds": [600, 3600],
                    },
                    "recipients": [
                        {"to_phone_number": "+12125550100", "variables": {"name": "Ann"}}
                    ],
                },
                request_only=True,
            ),
            OpenApiExample(
                "Voicemail",
                value={
                    "name": "Renewals",
                    "from_phone_number": "+15551234567",
                    "voicemail": {
                        "detect": True,
                        "on_machine": "leave_message",
                        "message": "Hi {{name}}, this is Acme. Please call us back.",
                    },
                    "retry": {"max_attempts": 2, "on": ["machine"], "backoff_seconds": [3600]},
                    "recipients": [
                        {"to_phone_number": "+12125550100", "variables": {"name": "Ann"}}
                    ],
                },
                request_only=True,
            ),
        ],
        responses={
            201: response,
            400: BAD_ROWS,
            **AUTHENTICATION_ERRORS,
            403: error_response(
                "A number or the assistant is not your organization's.",
                (
                    "Phone number",
                    "Unauthorized: phone number +15551234567 does not belong to your organization",
                ),
            ),
            404: error_response(
                "No assistant can be resolved for the first number.",
                ("No assistant", "No assistant found for phone number +15551234567"),
            ),
            405: method_not_allowed("GET and POST"),
            415: error_response(
                "The body is not `application/json`.",
                ("Form body", 'Unsupported media type "text/plain" in request.'),
            ),
            422: error_response(
                "`voicemail` asks for answering-machine detection from a number whose provider "
                "has none (a BYO SIP trunk). Nothing is created.",
                ("No machine detection", MachineDetectionUnsupported("BYO SIP trunk").message),
            ),
            429: rate_limited(),
        },
    )


def retrieve_campaign(*, detail: SerializerClass) -> Any:
    return extend_schema(
        operation_id="campaigns_retrieve",
        summary="Retrieve a campaign",
        description=(
            "One campaign with its progress: recipients by state and by outcome, the dials of "
            "the last minute (the measured rate) and an estimate of when it ends."
        ),
        tags=["campaigns"],
        parameters=[WWW_AUTHENTICATE, RETRY_AFTER],
        responses={200: detail, **AUTHENTICATION_ERRORS, **NOT_FOUND, 429: rate_limited()},
    )


ACTIONS = {
    "start": "Start dialling (a campaign with `start_at` in the future is `scheduled` until "
    "then). Only a draft starts.",
    "pause": "No new attempt begins; calls under way go on and their outcomes are recorded.",
    "resume": "A paused campaign dials again.",
    "cancel": "No new attempt begins, waiting recipients are `canceled`; calls under way are "
    "not hung up and their outcomes are recorded.",
}


def campaign_action(action: str, *, detail: SerializerClass) -> Any:
    return extend_schema(
        operation_id=f"campaigns_{action}",
        summary=f"{action.capitalize()} a campaign",
        description=ACTIONS[action],
        tags=["campaigns"],
        request=None,
        parameters=[WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            200: detail,
            **AUTHENTICATION_ERRORS,
            **NOT_FOUND,
            405: method_not_allowed("POST"),
            **CONFLICT,
            429: rate_limited(),
        },
    )


def list_recipients(*, filters: SerializerClass, item: SerializerClass) -> Any:
    return extend_schema(
        operation_id="campaigns_recipients_list",
        summary="List a campaign's recipients",
        description="In list order, with every attempt and its call; `?state=` filters.",
        tags=["campaigns"],
        parameters=[filters, WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            200: item(many=True),
            400: error_response(
                "The state filter is not a recipient state.",
                (
                    "Bad state",
                    "state must be one of: queued, retry_wait, dialing, calling, done, canceled",
                ),
            ),
            **AUTHENTICATION_ERRORS,
            **NOT_FOUND,
            429: rate_limited(),
        },
    )


class AddedSerializer(serializers.Serializer):
    added = serializers.IntegerField(help_text="Recipients added.")


def add_recipients(*, row: SerializerClass) -> Any:
    return extend_schema(
        operation_id="campaigns_recipients_add",
        summary="Add recipients",
        description=(
            "Up to 10,000 recipients a request, as JSON (a list of rows, or "
            '`{"recipients": [...]}`) or as `text/csv` with a header row: a `to_phone_number` '
            "column, every other column a variable of that name (an empty cell: not given), "
            "`metadata.<key>` columns the recipient's metadata. Every row is checked as "
            "`POST /calls/initiate` checks its body, and a number already in the campaign or "
            "twice in the list is a bad row too. All or nothing: with any bad row, the answer "
            "names every bad line and nothing is added."
        ),
        tags=["campaigns"],
        request={"application/json": row(many=True), "text/csv": {"type": "string"}},
        examples=[
            OpenApiExample(
                "Rows",
                value=[{"to_phone_number": "+15559870002", "variables": {"name": "Ann"}}],
                request_only=True,
                media_type="application/json",
            ),
            OpenApiExample(
                "CSV",
                value="to_phone_number,name,metadata.crm\n+15559870003,Bob,c3\n",
                request_only=True,
                media_type="text/csv",
            ),
        ],
        parameters=[WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            201: AddedSerializer,
            400: BAD_ROWS,
            **AUTHENTICATION_ERRORS,
            **NOT_FOUND,
            405: method_not_allowed("GET and POST"),
            409: error_response(
                "The campaign is over.",
                ("Over", "Recipients cannot be added to a completed campaign."),
            ),
            415: error_response(
                "The body is neither JSON nor CSV.",
                ("Form body", 'Unsupported media type "text/plain" in request.'),
            ),
            429: rate_limited(),
        },
    )


def list_do_not_call(*, item: SerializerClass) -> Any:
    return extend_schema(
        operation_id="do_not_call_list",
        summary="List the do-not-call numbers",
        description="Your organization's do-not-call list, newest first, with who added each.",
        tags=["do-not-call"],
        parameters=[WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            200: item(many=True),
            **AUTHENTICATION_ERRORS,
            **BAD_CURSOR,
            429: rate_limited(),
        },
    )


def add_do_not_call(*, request: SerializerClass, response: SerializerClass) -> Any:
    return extend_schema(
        operation_id="do_not_call_add",
        summary="Add a number to the do-not-call list",
        description=(
            "From now on the number is never dialled by your organization: `POST /calls/initiate` "
            "answers 403 and dials nothing, and campaigns skip it (outcome `do-not-call`). "
            "201 when added, 200 when it was listed already (who added it first is kept)."
        ),
        tags=["do-not-call"],
        request=request,
        examples=[
            OpenApiExample(
                "Asked not to be called",
                value={"number": "+15559870199", "reason": "asked on 2026-11-30"},
                request_only=True,
            )
        ],
        parameters=[WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            200: response,
            201: response,
            400: error_response(
                "The number is missing or not E.164.",
                (
                    "Not a phone number",
                    "number must be a phone number in E.164 format, e.g. +15551234567",
                ),
            ),
            **AUTHENTICATION_ERRORS,
            405: method_not_allowed("GET and POST"),
            415: error_response(
                "The body is not `application/json`.",
                ("Form body", 'Unsupported media type "text/plain" in request.'),
            ),
            429: rate_limited(),
        },
    )


def remove_do_not_call() -> Any:
    return extend_schema(
        operation_id="do_not_call_remove",
        summary="Remove a number from the do-not-call list",
        description="The number may be called again.",
        tags=["do-not-call"],
        request=None,
        parameters=[WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            204: OpenApiResponse(description="Removed."),
            **AUTHENTICATION_ERRORS,
            404: error_response("The number is not on your list.", ("Not listed", "Not found.")),
            405: method_not_allowed("DELETE"),
            429: rate_limited(),
        },
    )
