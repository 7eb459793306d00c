from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import Http404
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from burki.authentication import request_api_key
from burki.pagination import NewestFirstCursorPagination
from burki.throttling import ApiKeyRateThrottle, InitiateRateThrottle
from calls import openapi
from calls.idempotency import idempotent
from calls.models import Call, CallEvent, IdempotencyKey
from calls.permissions import CALLER_PERMISSIONS
from calls.selectors import (
    Caller,
    call_for_hang_up,
    call_for_organization,
    caller_named,
    calls_for_organization,
)
from calls.serializers import (
    E164Field,
    MetadataField,
    VariablesField,
    VoicemailSerializer,
    e164_messages,
    optional_spoken_text,
)
from calls.services import (
    Voicemail,
    call_hang_up,
    call_initiate,
    call_initiated_body,
    call_transfer,
)
from telephony.states import CallState

MAX_WELCOME_LENGTH = 2000
MAX_AGENDA_LENGTH = 4000


class InitiateCallApi(APIView):
    """POST /calls/initiate: place an outbound call from one of your numbers.

    DRF checks the key, then the rate limits, before `post` reads the body: a throttled key
    costs one query. The 403s are object permissions on what the body names (calls.permissions).
    """

    permission_classes = [IsAuthenticated, *CALLER_PERMISSIONS]
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
        welcome_message = optional_spoken_text(
            "welcome_message",
            MAX_WELCOME_LENGTH,
            help_text=(
                "A custom welcome message for the assistant to say at the beginning of the "
                "call. If not provided, the assistant's default greeting will be used. "
                "Supports variable substitution using {{variable}} syntax."
            ),
        )
        agenda = optional_spoken_text(
            "agenda",
            MAX_AGENDA_LENGTH,
            help_text=(
                "A specific topic or goal for the call. This can be used to guide the "
                "assistant's conversation. Supports variable substitution using {{variable}} "
                "syntax."
            ),
        )
        variables = VariablesField(required=False, allow_null=True)
        metadata = MetadataField(required=False, allow_null=True)
        voicemail = VoicemailSerializer(
            required=False,
            allow_null=True,
            help_text=(
                "Optional: answering-machine detection by the provider, without keeping a "
                "person waiting for the verdict, which lands on the call as `answered_by`. "
                "Not offered on BYO SIP trunk numbers (422)."
            ),
        )

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

    @openapi.initiate_call(request=InputSerializer, response=OutputSerializer)
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        caller = caller_named(
            number=data["from_phone_number"], assistant_id=data.get("assistant_id")
        )
        self.check_object_permissions(request, caller)
        return idempotent(
            self, request, data, lambda claim: self.initiate(request, data, caller, claim)
        )

    def initiate(
        self,
        request: Request,
        data: dict[str, Any],
        caller: Caller,
        idempotency_claim: IdempotencyKey | None,
    ) -> Response:
        assert caller.phone_number is not None  # FromNumberBelongsToOrganization saw to it
        call = call_initiate(
            organization=request_api_key(request).organization,
            phone_number=caller.phone_number,
            to_number=data["to_phone_number"],
            assistant_override=caller.assistant,
            welcome_message=data.get("welcome_message"),
            agenda=data.get("agenda"),
            variables=data.get("variables"),
            metadata=data.get("metadata"),
            voicemail=Voicemail.from_request(data.get("voicemail")),
            idempotency_claim=idempotency_claim,
        )
        return Response(self.OutputSerializer(call_initiated_body(call)).data)


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
    voicemail = serializers.JSONField(
        read_only=True,
        help_text="The call's answering-machine detection: `on_machine` and the rendered "
        "`message`; null when it was not asked for.",
    )

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
            "metadata",
            "voicemail",
            "answered_by",
            "transferred_to",
            "transferred_at",
            "time_limit_seconds",
            "rate_cents_per_minute",
            "duration_seconds",
            "cost_cents",
            "end_reason",
            "settled_by",
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

    @openapi.list_calls(filters=FilterSerializer, item=CallOutputSerializer)
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
        return paginator.get_paginated_response(CallOutputSerializer(page, many=True).data)


class CallHangUpApi(APIView):
    """POST /calls/{call_id}/hangup: end one of your calls now."""

    @openapi.hang_up_call(detail=CallDetailOutputSerializer)
    def post(self, request: Request, call_id: UUID) -> Response:
        call = call_for_hang_up(
            organization_id=request_api_key(request).organization_id, call_id=call_id
        )
        if call is None:
            raise Http404
        call = call_hang_up(call=call)
        return Response(CallDetailOutputSerializer(call).data)


class CallDetailApi(APIView):
    """GET /calls/{call_id}: one of your calls, with its timeline."""

    @openapi.retrieve_call(detail=CallDetailOutputSerializer)
    def get(self, request: Request, call_id: UUID) -> Response:
        call = call_for_organization(
            organization_id=request_api_key(request).organization_id, call_id=call_id
        )
        if call is None:
            raise Http404
        return Response(CallDetailOutputSerializer(call).data)


class CallTransferApi(APIView):
    """POST /calls/{call_id}/transfer: hand the callee of one of your calls to a person."""

    @extend_schema_serializer(component_name="TransferCall")
    class InputSerializer(serializers.Serializer):
        to_phone_number = E164Field(
            error_messages=e164_messages("to_phone_number"),
            help_text="Who takes the call over, in E.164 format.",
        )

    @openapi.transfer_call(request=InputSerializer, detail=CallDetailOutputSerializer)
    def post(self, request: Request, call_id: UUID) -> Response:
        # The account its provider is asked with, as for a hang-up.
        call = call_for_hang_up(
            organization_id=request_api_key(request).organization_id, call_id=call_id
        )
        if call is None:
            raise Http404
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        call = call_transfer(call=call, to_number=serializer.validated_data["to_phone_number"])
        return Response(CallDetailOutputSerializer(call).data)
