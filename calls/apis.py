from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import Http404
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from burki.authentication import request_api_key
from burki.pagination import NewestFirstCursorPagination
from burki.schema import (
    AUTHENTICATION_ERRORS,
    RETRY_AFTER,
    WWW_AUTHENTICATE,
    error_response,
    method_not_allowed,
    rate_limited,
)
from burki.throttling import ApiKeyRateThrottle, InitiateRateThrottle
from calls import idempotency
from calls.errors import (
    IdempotencyKeyInFlight,
    IdempotencyKeyInvalid,
    IdempotencyKeyReused,
    TooManyConcurrentCalls,
)
from calls.models import Call, CallEvent
from calls.permissions import AssistantBelongsToOrganization, FromNumberBelongsToOrganization
from calls.selectors import call_for_organization, calls_for_organization
from calls.serializers import (
    E164Field,
    StrictCharField,
    VariablesField,
    e164_messages,
    text_messages,
)
from calls.services import call_advance_simulated, call_initiate, call_initiated_body
from telephony.states import CallState

MAX_WELCOME_LENGTH = 2000
MAX_AGENDA_LENGTH = 4000

IDEMPOTENCY_KEY = OpenApiParameter(
    idempotency.HEADER,
    {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        "pattern": "^[ -~]+$",
    },
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        f"Optional: 1 to {idempotency.MAX_KEY_LENGTH} printable ASCII characters of your "
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
    response=[200, 400, 402, 404, 502, 504],
    description=(
        "`true` when this is the kept answer to an earlier request with the same "
        "`Idempotency-Key`; absent otherwise."
    ),
)


class InitiateCallApi(APIView):
    """POST /calls/initiate: place an outbound call from one of your numbers."""

    permission_classes = [
        IsAuthenticated,
        FromNumberBelongsToOrganization,
        AssistantBelongsToOrganization,
    ]
    throttle_classes = [ApiKeyRateThrottle, InitiateRateThrottle]

    @extend_schema_serializer(component_name="InitiateCall")
    class InputSerializer(serializers.Serializer):
        """Request model for initiating an outbound call."""

        from_phone_number = E164Field(
            error_messages=e164_messages("from_phone_number"),
            help_text=(
                "The phone number to call from, in E.164 format. This number must be assigned "
                "to an assistant or ConversationFlow in your organization."
            ),
        )
        to_phone_number = E164Field(
            error_messages=e164_messages("to_phone_number"),
            help_text="The destination phone number to call, in E.164 format.",
        )
        assistant_id = serializers.IntegerField(
            help_text=(
                "Override the default assistant attached to the phone number. If not provided, "
                "the system uses the assistant assigned to from_phone_number."
            ),
            required=False,
            allow_null=True,
            min_value=1,
            max_value=2**63 - 1,
            error_messages={
                "invalid": "assistant_id must be an integer",
                "min_value": "assistant_id must be a positive integer",
                "max_value": "assistant_id is too large",
                "max_string_length": "assistant_id is too large",
            },
        )
        welcome_message = StrictCharField(
            help_text=(
                "A custom welcome message for the assistant to say at the beginning of the "
                "call. If not provided, the assistant's default greeting will be used. "
                "Supports variable substitution using {{variable}} syntax."
            ),
            required=False,
            allow_null=True,
            allow_blank=True,
            trim_whitespace=False,
            max_length=MAX_WELCOME_LENGTH,
            error_messages=text_messages("welcome_message", MAX_WELCOME_LENGTH),
        )
        agenda = StrictCharField(
            help_text=(
                "A specific topic or goal for the call. This can be used to guide the "
                "assistant's conversation. Supports variable substitution using {{variable}} "
                "syntax."
            ),
            required=False,
            allow_null=True,
            allow_blank=True,
            trim_whitespace=False,
            max_length=MAX_AGENDA_LENGTH,
            error_messages=text_messages("agenda", MAX_AGENDA_LENGTH),
        )
        variables = VariablesField(required=False, allow_null=True)

        def to_internal_value(self, data: Any) -> Any:
            if not isinstance(data, dict):
                raise serializers.ValidationError(
                    {"non_field_errors": ["The request body must be a JSON object."]}
                )
            return super().to_internal_value(data)

    @extend_schema_serializer(component_name="InitiateCallResponse")
    class OutputSerializer(serializers.Serializer):
        """Response model for initiating an outbound call."""

        message = serializers.CharField(
            read_only=True, help_text="Always `Call initiated successfully`."
        )
        call_sid = serializers.CharField(
            read_only=True, help_text="The telephony provider's id for the call."
        )
        call_id = serializers.UUIDField(
            read_only=True, help_text="Our id for the call: follow it at `GET /calls/{call_id}`."
        )

    phone_number: Any = None
    assistant: Any = None

    def validated_input(self, request: Request) -> dict[str, Any]:
        if not hasattr(self, "_validated_input"):
            serializer = self.InputSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            self._validated_input = serializer.validated_data
        return self._validated_input

    @extend_schema(
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
        request=InputSerializer,
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
        ],
        parameters=[IDEMPOTENCY_KEY, WWW_AUTHENTICATE, RETRY_AFTER, IDEMPOTENT_REPLAYED],
        responses={
            200: OpenApiResponse(
                response=OutputSerializer,
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
                "of no one gets the same answer).",
                (
                    "Phone number",
                    "Unauthorized: phone number +15551234567 does not belong to your organization",
                ),
                ("Assistant", "Unauthorized: assistant 456 does not belong to your organization"),
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
                "This `Idempotency-Key` was already used with a different body. Nothing is "
                "dialled; use a new key for a new call.",
                ("Key reused", IdempotencyKeyReused.default_message),
            ),
            429: rate_limited(
                ("Too many simultaneous calls", TooManyConcurrentCalls(10).message),
                also="more calls a minute than it may place, or your organization already has "
                "as many calls in progress as it may",
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
            504: error_response(
                "The telephony provider did not answer in time. The call is recorded as "
                "`failed` and the held money is released.",
                (
                    "Provider timed out",
                    "The telephony provider did not answer in time; the call was not placed.",
                ),
            ),
        },
    )
    def post(self, request: Request) -> Response:
        data = self.validated_input(request)
        raw_key = request.headers.get(idempotency.HEADER)
        if raw_key is None:
            return self.initiate(request, data)
        claimed = idempotency.idempotency_key_claim(
            organization_id=request_api_key(request).organization_id,
            key=idempotency.idempotency_key_parse(raw_key),
            fingerprint=idempotency.request_fingerprint(data),
        )
        if isinstance(claimed, idempotency.Replay):
            return Response(
                claimed.body, status=claimed.status, headers={"Idempotent-Replayed": "true"}
            )
        try:
            response = self.initiate(request, data, idempotency_key_id=claimed.pk)
        except Exception as exc:
            try:
                response = self.handle_exception(exc)  # shaped as the client will see it
            except Exception:
                body = {"detail": "Internal server error."}
                idempotency.idempotency_key_finish(record=claimed, status=500, body=body)
                raise
        idempotency.idempotency_key_finish(
            record=claimed, status=response.status_code, body=response.data
        )
        return response

    def initiate(
        self, request: Request, data: dict[str, Any], idempotency_key_id: int | None = None
    ) -> Response:
        call = call_initiate(
            organization=request_api_key(request).organization,
            phone_number=self.phone_number,
            to_number=data["to_phone_number"],
            assistant_override=self.assistant,
            welcome_message=data.get("welcome_message"),
            agenda=data.get("agenda"),
            variables=data.get("variables"),
            idempotency_key_id=idempotency_key_id,
        )
        return Response(call_initiated_body(call))


@extend_schema_serializer(component_name="Call")
class CallOutputSerializer(serializers.ModelSerializer):
    @extend_schema_serializer(component_name="CallEvent")
    class EventSerializer(serializers.ModelSerializer):
        class Meta:
            model = CallEvent
            fields = ["status", "source", "detail", "created_at"]
            read_only_fields = fields

    call_id = serializers.UUIDField(source="id", read_only=True)
    from_phone_number = serializers.CharField(source="from_number", read_only=True)
    to_phone_number = serializers.CharField(source="to_number", read_only=True)

    class Meta:
        model = Call
        fields = [
            "call_id",
            "call_sid",
            "status",
            "from_phone_number",
            "to_phone_number",
            "assistant_id",
            "conversation_flow_id",
            "provider",
            "welcome_message",
            "agenda",
            "variables",
            "time_limit_seconds",
            "rate_cents_per_minute",
            "duration_seconds",
            "cost_cents",
            "end_reason",
            "error",
            "created_at",
            "initiated_at",
            "answered_at",
            "ended_at",
        ]
        # Output only; read-only fields are also what the schema lists as always present.
        read_only_fields = fields


@extend_schema_serializer(component_name="CallDetail")
class CallDetailOutputSerializer(CallOutputSerializer):
    events = CallOutputSerializer.EventSerializer(many=True, read_only=True)

    class Meta(CallOutputSerializer.Meta):
        fields = [*CallOutputSerializer.Meta.fields, "events"]
        read_only_fields = fields


class CallPagination(NewestFirstCursorPagination):
    items = "Calls"


class CallListApi(APIView):
    """GET /calls: your organization's calls, newest first."""

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(
            choices=CallState.choices,
            required=False,
            error_messages={
                "invalid_choice": "status must be one of: " + ", ".join(CallState.values)
            },
        )

    pagination_class = CallPagination  # read by the schema; get() pages with it too

    @extend_schema(
        operation_id="calls_list",
        summary="List calls",
        description=(
            "Your organization's calls, newest first, a page at a time: follow `next` (a cursor "
            "link) until it is null."
        ),
        tags=["calls"],
        parameters=[FilterSerializer, WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            200: CallOutputSerializer(many=True),
            400: error_response(
                "The status filter is not a call status.",
                ("Bad status", "status must be one of: " + ", ".join(CallState.values)),
            ),
            **AUTHENTICATION_ERRORS,
            404: error_response(
                "The cursor is not one we handed out.", ("Bad cursor", "Invalid cursor")
            ),
            429: rate_limited(),
        },
    )
    def get(self, request: Request) -> Response:
        # A plain dict: given a QueryDict, DRF reads `?status=` as "not given" (HTML form
        # rules) and would silently list every call.
        filters = self.FilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        calls = calls_for_organization(
            organization_id=request_api_key(request).organization_id,
            status=filters.validated_data.get("status"),
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(calls, request, view=self) or []
        page = [call_advance_simulated(call=call) for call in page]
        return paginator.get_paginated_response(CallOutputSerializer(page, many=True).data)


class CallDetailApi(APIView):
    """GET /calls/{call_id}: one of your calls, with its timeline."""

    @extend_schema(
        operation_id="calls_retrieve",
        summary="Retrieve a call",
        description="One of your calls with its timeline of lifecycle events.",
        tags=["calls"],
        parameters=[WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            200: CallDetailOutputSerializer,
            **AUTHENTICATION_ERRORS,
            404: error_response(
                "No call with this id in your organization.", ("Unknown call", "Not found.")
            ),
            429: rate_limited(),
        },
    )
    def get(self, request: Request, call_id: UUID) -> Response:
        call = call_for_organization(
            organization_id=request_api_key(request).organization_id, call_id=call_id
        )
        if call is None:
            raise Http404
        call = call_advance_simulated(call=call)
        return Response(CallDetailOutputSerializer(call).data)
