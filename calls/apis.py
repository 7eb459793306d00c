from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import Http404
from rest_framework import serializers
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from burki.throttling import ApiKeyRateThrottle, InitiateRateThrottle
from calls import idempotency
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
from calls.services import call_advance_simulated, call_initiate
from telephony.states import CallState

MAX_WELCOME_LENGTH = 2000
MAX_AGENDA_LENGTH = 4000


class InitiateCallApi(APIView):
    """POST /calls/initiate: place an outbound call from one of your numbers."""

    permission_classes = [
        IsAuthenticated,
        FromNumberBelongsToOrganization,
        AssistantBelongsToOrganization,
    ]
    throttle_classes = [ApiKeyRateThrottle, InitiateRateThrottle]

    class InputSerializer(serializers.Serializer):
        from_phone_number = E164Field(error_messages=e164_messages("from_phone_number"))
        to_phone_number = E164Field(error_messages=e164_messages("to_phone_number"))
        assistant_id = serializers.IntegerField(
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
            required=False,
            allow_null=True,
            allow_blank=True,
            trim_whitespace=False,
            max_length=MAX_WELCOME_LENGTH,
            error_messages=text_messages("welcome_message", MAX_WELCOME_LENGTH),
        )
        agenda = StrictCharField(
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

    class OutputSerializer(serializers.Serializer):
        message = serializers.CharField()
        call_sid = serializers.CharField()
        call_id = serializers.UUIDField()

    phone_number: Any = None
    assistant: Any = None

    def validated_input(self, request: Request) -> dict[str, Any]:
        if not hasattr(self, "_validated_input"):
            serializer = self.InputSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            self._validated_input = serializer.validated_data
        return self._validated_input

    def post(self, request: Request) -> Response:
        data = self.validated_input(request)
        raw_key = request.headers.get(idempotency.HEADER)
        if raw_key is None:
            return self.initiate(request, data)
        claimed = idempotency.idempotency_key_claim(
            organization_id=request.auth.organization_id,
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
            organization=request.auth.organization,
            phone_number=self.phone_number,
            to_number=data["to_phone_number"],
            assistant_override=self.assistant,
            welcome_message=data.get("welcome_message"),
            agenda=data.get("agenda"),
            variables=data.get("variables"),
            idempotency_key_id=idempotency_key_id,
        )
        return Response(
            {
                "message": "Call initiated successfully",
                "call_sid": call.call_sid,
                "call_id": call.pk,
            }
        )


class CallOutputSerializer(serializers.ModelSerializer):
    class EventSerializer(serializers.ModelSerializer):
        class Meta:
            model = CallEvent
            fields = ["status", "source", "detail", "created_at"]

    call_id = serializers.UUIDField(source="id")
    from_phone_number = serializers.CharField(source="from_number")
    to_phone_number = serializers.CharField(source="to_number")

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


class CallDetailOutputSerializer(CallOutputSerializer):
    events = CallOutputSerializer.EventSerializer(many=True, read_only=True)

    class Meta(CallOutputSerializer.Meta):
        fields = [*CallOutputSerializer.Meta.fields, "events"]


class CallPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


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

    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        calls = calls_for_organization(
            organization_id=request.auth.organization_id,
            status=filters.validated_data.get("status"),
        )
        paginator = CallPagination()
        page = paginator.paginate_queryset(calls, request, view=self) or []
        page = [call_advance_simulated(call=call) for call in page]
        return paginator.get_paginated_response(CallOutputSerializer(page, many=True).data)


class CallDetailApi(APIView):
    """GET /calls/{call_id}: one of your calls, with its timeline."""

    def get(self, request: Request, call_id: UUID) -> Response:
        call = call_for_organization(organization_id=request.auth.organization_id, call_id=call_id)
        if call is None:
            raise Http404
        call = call_advance_simulated(call=call)
        return Response(CallDetailOutputSerializer(call).data)
