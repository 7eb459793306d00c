"""The OpenAPI declarations of the calls API (drf-spectacular), kept out of the views so each
view reads as what it does. Each function returns the `extend_schema` decorator of one
operation, given the serializers the view declares."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
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
from calls.errors import (
    IDEMPOTENCY_HEADER,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    CallNotConfirmed,
    CallNotInProgress,
    CallsPerSecondExceeded,
    IdempotencyKeyInFlight,
    IdempotencyKeyInvalid,
    IdempotencyKeyReused,
    MachineDetectionUnsupported,
    NumberOnDoNotCallList,
    ProviderTimedOut,
    TooManyConcurrentCalls,
    TransferUnsupported,
)
from telephony.states import CallState

IDEMPOTENCY_KEY = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH,
        "pattern": "^[ -~]+$",
    },
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        f"Optional: 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters of your "
        "choosing (a UUID will do), one per call you mean to place, kept for 24 hours per "
        "organization. A retry with the same key and the same body gets the first request's "
        "status and body again, with `Idempotent-Replayed: true`, and dials nothing; the same "
        "key with a different body is a 422; while the first request is still running, a 409. "
        "A 409, 429 or 503 is not kept: retrying after one runs the request afresh."
    ),
    examples=[OpenApiExample("Key", value="5d7c1b0e-2f4a-4c39-9e61-0b8f3a2d6c41")],
)
IDEMPOTENT_REPLAYED = OpenApiParameter(
    "Idempotent-Replayed",
    {"type": "string", "enum": ["true"]},
    location=OpenApiParameter.HEADER,
    # Every answer a request can reach once it runs is kept for replay (calls/idempotency.py).
    response=[200, 400, 402, 404, 422, 502, 504],
    description=(
        "`true` when this is the kept answer to an earlier request with the same "
        "`Idempotency-Key`; absent otherwise."
    ),
)


class TimedOutErrorSerializer(ErrorSerializer):
    """The 504 of POST /calls/initiate: the error body, and the call it may have placed."""

    call_id = serializers.UUIDField(help_text="The call that may have been placed: follow it.")


def initiate_call(*, request: SerializerClass, response: SerializerClass) -> Any:
    return extend_schema(
        operation_id="calls_initiate",
        summary="Initiate an outbound call",
        description=(
            "Place an outbound call from one of your AI assistants to an external phone number, "
            "through the telephony provider configured for `from_phone_number` (Twilio, Telnyx, "
            "Vonage or a BYO SIP trunk).\n\n"
            "The assistant is resolved in this order: `assistant_id` if given (it must belong to "
            "your organization); else the ConversationFlow `from_phone_number` is assigned to "
            "(its base assistant and live flow); else the assistant assigned to the number. If "
            "none resolves, the request fails with a 404.\n\n"
            "The money the call may cost is held from your balance before the provider is asked "
            "to dial and settled when the call ends.\n\n"
            "Send an `Idempotency-Key` to retry safely: a retry with the same key never dials "
            "twice."
        ),
        tags=["calls"],
        request=request,
        examples=[
            OpenApiExample(
                "BasicCall",
                summary="Basic call (using the phone number's default assistant)",
                value={"from_phone_number": "+15551234567", "to_phone_number": "+15559876543"},
                request_only=True,
            ),
            OpenApiExample(
                "CallWithVariables",
                summary="Call with custom message and variables",
                value={
                    "from_phone_number": "+15551234567",
                    "to_phone_number": "+15559876543",
                    "welcome_message": (
                        "Hello {{name}}, this is a reminder about your appointment tomorrow "
                        "at {{time}}."
                    ),
                    "agenda": "Remind {{name}} about their upcoming {{appointment_type}} "
                    "appointment.",
                    "variables": {
                        "name": "John Doe",
                        "time": "10 AM",
                        "appointment_type": "dental",
                    },
                },
                request_only=True,
            ),
            OpenApiExample(
                "CallWithAssistantOverride",
                summary="Call with assistant override",
                value={
                    "from_phone_number": "+15551234567",
                    "to_phone_number": "+15559876543",
                    "assistant_id": 456,
                    "welcome_message": "Hi there! I'm calling about your recent inquiry.",
                },
                request_only=True,
            ),
            OpenApiExample(
                "CallWithVoicemail",
                summary="Call that leaves a message if a machine answers",
                value={
                    "from_phone_number": "+15551234567",
                    "to_phone_number": "+15559876543",
                    "variables": {"name": "John Doe"},
                    "voicemail": {
                        "detect": True,
                        "on_machine": "leave_message",
                        "message": "Hi {{name}}, this is Acme Dental. Please call us back.",
                    },
                },
                request_only=True,
            ),
        ],
        parameters=[IDEMPOTENCY_KEY, WWW_AUTHENTICATE, RETRY_AFTER, IDEMPOTENT_REPLAYED],
        responses={
            200: OpenApiResponse(
                response=response,
                description="The provider accepted the call.",
                examples=[
                    OpenApiExample(
                        "Call initiated",
                        value={
                            "message": "Call initiated successfully",
                            "call_sid": "CAxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                            "call_id": "5f0c6a8e-8d51-4b8e-9a57-1f1b7c2d9e3a",
                        },
                        response_only=True,
                    )
                ],
            ),
            400: error_response(
                "Required parameters are missing or invalid, or a referenced `{{variable}}` "
                "was not supplied. Nothing is dialled.",
                ("Missing parameter", "from_phone_number is required"),
                (
                    "Not a phone number",
                    "to_phone_number must be a phone number in E.164 format, e.g. +15551234567",
                ),
                (
                    "Missing variable",
                    "Variable 'name' is used in welcome_message but was not supplied in variables.",
                ),
                ("Malformed JSON", "JSON parse error - Expecting value: line 1 column 1 (char 0)"),
                ("Malformed Idempotency-Key", IdempotencyKeyInvalid.default_message),
            ),
            **AUTHENTICATION_ERRORS,
            402: error_response(
                "Your organization's available balance does not pay for one billable minute.",
                (
                    "Insufficient balance",
                    "Insufficient balance. Please add funds to continue making calls.",
                ),
            ),
            403: error_response(
                "The phone number or assistant doesn't belong to your organization (a number "
                "of no one gets the same answer), or `to_phone_number` is on your organization's "
                "do-not-call list (`/do-not-call`): nothing is dialled or held.",
                (
                    "Phone number",
                    "Unauthorized: phone number +15551234567 does not belong to your organization",
                ),
                ("Assistant", "Unauthorized: assistant 456 does not belong to your organization"),
                ("Do not call", NumberOnDoNotCallList("+15559876543").message),
            ),
            404: error_response(
                "No assistant can be resolved for the call, or the resolved one is inactive.",
                ("No assistant", "No assistant found for phone number +15551234567"),
                ("Inactive assistant", "Assistant 456 is not active"),
            ),
            405: method_not_allowed("POST"),
            409: error_response(
                "The first request with this `Idempotency-Key` is still running. Nothing is "
                "dialled; retry shortly to get its answer.",
                ("Key in flight", IdempotencyKeyInFlight.default_message),
            ),
            415: error_response(
                "The body is not `application/json`.",
                (
                    "Form body",
                    'Unsupported media type "application/x-www-form-urlencoded" in request.',
                ),
            ),
            422: error_response(
                "This `Idempotency-Key` was already used with a different body, or `voicemail` "
                "asks for answering-machine detection from a number whose provider has none (a "
                "BYO SIP trunk). Nothing is dialled.",
                ("Key reused", IdempotencyKeyReused.default_message),
                ("No machine detection", MachineDetectionUnsupported("BYO SIP trunk").message),
            ),
            429: rate_limited(
                ("Too many simultaneous calls", TooManyConcurrentCalls(10).message),
                ("Calls a second", CallsPerSecondExceeded("1", 1).message),
                also="more calls a minute than it may place, or your organization already has "
                "as many calls in progress as it may, or the number's provider account has no "
                "free slot of its calls a second within 2 s",
            ),
            502: error_response(
                "The telephony provider refused the call. The call is recorded as `failed` and "
                "the held money is released.",
                ("Provider refused", "The telephony provider could not place the call."),
            ),
            503: error_response(
                "The telephony provider is unavailable. The call is recorded as `failed` and "
                "the held money is released.",
                (
                    "Provider unavailable",
                    "The telephony provider is not available right now; try again shortly.",
                ),
            ),
            504: OpenApiResponse(
                response=TimedOutErrorSerializer,
                description=(
                    "The telephony provider did not answer in time, so the call may have been "
                    "placed: it is kept, `unknown`, with its hold, and `call_id` says which it "
                    "is. Follow it at `GET /calls/{call_id}`: its first webhook makes it "
                    "`initiated` (or further); if the provider placed nothing it ends `failed` "
                    "and the money is released. Do not retry with a new Idempotency-Key: that "
                    "could ring the callee twice."
                ),
                examples=[
                    OpenApiExample(
                        "Provider timed out",
                        value={
                            "detail": ProviderTimedOut.default_message,
                            "call_id": "5f0c6a8e-8d51-4b8e-9a57-1f1b7c2d9e3a",
                        },
                        response_only=True,
                    )
                ],
            ),
        },
    )


def list_calls(*, filters: SerializerClass, item: SerializerClass) -> Any:
    return extend_schema(
        operation_id="calls_list",
        summary="List calls",
        description=(
            "Your organization's calls, newest first, a page at a time: follow `next` (a cursor "
            "link) until it is null."
        ),
        tags=["calls"],
        parameters=[filters, WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            200: item(many=True),
            400: error_response(
                "The status filter is not a call status.",
                ("Bad status", "status must be one of: " + ", ".join(CallState.values)),
            ),
            **AUTHENTICATION_ERRORS,
            **BAD_CURSOR,
            429: rate_limited(),
        },
    )


def retrieve_call(*, detail: SerializerClass) -> Any:
    return extend_schema(
        operation_id="calls_retrieve",
        summary="Retrieve a call",
        description="One of your calls with its timeline of lifecycle events.",
        tags=["calls"],
        parameters=[WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            200: detail,
            **AUTHENTICATION_ERRORS,
            404: error_response(
                "No call with this id in your organization.", ("Unknown call", "Not found.")
            ),
            429: rate_limited(),
        },
    )


def hang_up_call(*, detail: SerializerClass) -> Any:
    return extend_schema(
        operation_id="calls_hangup",
        summary="Hang up a call",
        description=(
            "End one of your calls now, through its provider: a ringing call is canceled, an "
            "answered one hung up. The answer is the call as `GET /calls/{call_id}` shows it; "
            "its status moves to `completed` or `canceled` (and the money settles) when the "
            "provider reports the end, usually within a second. A call already over is answered "
            "as it is, so asking twice is harmless."
        ),
        tags=["calls"],
        request=None,
        parameters=[WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            200: detail,
            **AUTHENTICATION_ERRORS,
            404: error_response(
                "No call with this id in your organization.", ("Unknown call", "Not found.")
            ),
            405: method_not_allowed("POST"),
            409: error_response(
                "The provider has not confirmed the call yet (it is `queued`, or `unknown` "
                "after a time-out): there is nothing to name to it. Try again shortly.",
                ("Not confirmed", CallNotConfirmed.default_message),
            ),
            429: rate_limited(),
            502: error_response(
                "The provider refused to end the call or could not be reached.",
                (
                    "Provider refused",
                    "The telephony provider could not end the call: Could not reach Twilio.",
                ),
            ),
        },
    )


def transfer_call(*, request: SerializerClass, detail: SerializerClass) -> Any:
    return extend_schema(
        operation_id="calls_transfer",
        summary="Transfer a call to a person",
        description=(
            "Hand the callee of one of your calls in progress to another number, through its "
            "provider (a cold transfer: the assistant leaves the call). The answer is the call "
            "as `GET /calls/{call_id}` shows it, with `transferred_to` and `transferred_at`. "
            "It stays one call: it is billed at your rate, as one call, until the provider "
            "reports its end, and never past its time limit."
        ),
        tags=["calls"],
        request=request,
        examples=[
            OpenApiExample(
                "Transfer",
                value={"to_phone_number": "+15557654321"},
                request_only=True,
            )
        ],
        parameters=[WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            200: detail,
            400: error_response(
                "`to_phone_number` is missing or not a phone number. Nothing is changed.",
                ("Missing number", "to_phone_number is required"),
                (
                    "Not a phone number",
                    "to_phone_number must be a phone number in E.164 format, e.g. +15551234567",
                ),
            ),
            **AUTHENTICATION_ERRORS,
            403: error_response(
                "`to_phone_number` is on your organization's do-not-call list (`/do-not-call`): "
                "the provider is not asked and the call goes on as it was.",
                (
                    "Do not call",
                    NumberOnDoNotCallList(
                        "+15557654321", not_done="the call was not transferred"
                    ).message,
                ),
            ),
            404: error_response(
                "No call with this id in your organization.", ("Unknown call", "Not found.")
            ),
            405: method_not_allowed("POST"),
            409: error_response(
                "The call is not in progress (not answered yet, or over).",
                ("Not in progress", CallNotInProgress("completed").message),
            ),
            422: error_response(
                "The call's provider cannot transfer calls (every provider here can, today).",
                ("Not supported", TransferUnsupported("Sandbox").message),
            ),
            429: rate_limited(),
            502: error_response(
                "The provider refused to transfer the call or could not be reached. The call "
                "goes on as it was.",
                (
                    "Provider refused",
                    "The telephony provider could not transfer the call: Could not reach Twilio.",
                ),
            ),
        },
    )
