from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import Http404
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from burki.authentication import request_api_key
from burki.pagination import NewestFirstCursorPagination
from webhooks import http, openapi
from webhooks.models import EVENT_TYPES, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from webhooks.selectors import (
    webhook_deliveries_for_endpoint,
    webhook_endpoint_for_organization,
    webhook_endpoints_for_organization,
    webhook_event_for_organization,
)
from webhooks.services import (
    event_redeliver,
    webhook_endpoint_create,
    webhook_endpoint_rotate_secret,
    webhook_endpoint_update,
)


class UrlField(serializers.URLField):
    default_error_messages = {
        "invalid": "url must be an http or https URL",
        "required": "url is required",
        "null": "url is required",
        "blank": "url is required",
        "max_length": "url must be at most 2000 characters",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=2000, help_text="Where we POST the events.", **kwargs)

    def to_internal_value(self, data: Any) -> str:
        url = super().to_internal_value(data)
        try:
            http.check_url(url)
        except http.TargetRefused as exc:
            raise serializers.ValidationError(str(exc)) from exc
        return url


class EventTypesField(serializers.ListField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            child=serializers.ChoiceField(
                choices=list(EVENT_TYPES),
                error_messages={
                    "invalid_choice": "events: each must be one of " + ", ".join(EVENT_TYPES)
                },
            ),
            max_length=len(EVENT_TYPES),
            help_text=(
                "The event types to send: "
                + "; ".join(f"`{name}`: {text}" for name, text in EVENT_TYPES.items())
                + " Empty or left out: every type, including types added later."
            ),
            error_messages={"not_a_list": "events must be a list of event types"},
            **kwargs,
        )

    def to_internal_value(self, data: Any) -> list[str]:
        return sorted(set(super().to_internal_value(data)))


@extend_schema_serializer(component_name="WebhookEndpoint")
class EndpointOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "events", "enabled", "disabled_reason", "created_at", "updated_at"]
        read_only_fields = fields


@extend_schema_serializer(component_name="WebhookEndpointWithSecret")
class EndpointWithSecretSerializer(EndpointOutputSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text=(
            "The signing secret (`whsec_` + base64), shown only now: verify every delivery's "
            "`webhook-signature` with it (Standard Webhooks)."
        ),
    )

    class Meta(EndpointOutputSerializer.Meta):
        fields = [*EndpointOutputSerializer.Meta.fields, "secret"]
        read_only_fields = fields


def _endpoint_or_404(request: Request, endpoint_id: UUID) -> WebhookEndpoint:
    endpoint = webhook_endpoint_for_organization(
        organization_id=request_api_key(request).organization_id, endpoint_id=endpoint_id
    )
    if endpoint is None:
        raise Http404
    return endpoint


def _with_secret(endpoint: WebhookEndpoint, secret: str) -> dict[str, Any]:
    return {**EndpointOutputSerializer(endpoint).data, "secret": secret}


class EndpointPagination(NewestFirstCursorPagination):
    items = "Endpoints"


class EndpointListCreateApi(APIView):
    """GET /webhook-endpoints and POST /webhook-endpoints."""

    @extend_schema_serializer(component_name="WebhookEndpointCreate")
    class InputSerializer(serializers.Serializer):
        url = UrlField()
        events = EventTypesField(required=False)

    pagination_class = EndpointPagination

    @openapi.list_endpoints(item=EndpointOutputSerializer)
    def get(self, request: Request) -> Response:
        endpoints = webhook_endpoints_for_organization(
            organization_id=request_api_key(request).organization_id
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(endpoints, request, view=self) or []
        return paginator.get_paginated_response(EndpointOutputSerializer(page, many=True).data)

    @openapi.create_endpoint(request=InputSerializer, response=EndpointWithSecretSerializer)
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint, secret = webhook_endpoint_create(
            organization_id=request_api_key(request).organization_id,
            url=serializer.validated_data["url"],
            events=serializer.validated_data.get("events", []),
        )
        return Response(_with_secret(endpoint, secret), status=status.HTTP_201_CREATED)


class EndpointDetailApi(APIView):
    """GET, PATCH and DELETE /webhook-endpoints/{endpoint_id}."""

    @extend_schema_serializer(component_name="WebhookEndpointUpdate")
    class InputSerializer(serializers.Serializer):
        url = UrlField(required=False)
        events = EventTypesField(required=False)
        enabled = serializers.BooleanField(
            required=False,
            help_text="False stops deliveries; true starts them again (and forgets why we "
            "disabled it).",
            error_messages={"invalid": "enabled must be true or false"},
        )

    @openapi.retrieve_endpoint(response=EndpointOutputSerializer)
    def get(self, request: Request, endpoint_id: UUID) -> Response:
        return Response(EndpointOutputSerializer(_endpoint_or_404(request, endpoint_id)).data)

    @openapi.update_endpoint(request=InputSerializer, response=EndpointOutputSerializer)
    def patch(self, request: Request, endpoint_id: UUID) -> Response:
        endpoint = _endpoint_or_404(request, endpoint_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = webhook_endpoint_update(endpoint=endpoint, **serializer.validated_data)
        return Response(EndpointOutputSerializer(endpoint).data)

    @openapi.delete_endpoint()
    def delete(self, request: Request, endpoint_id: UUID) -> Response:
        _endpoint_or_404(request, endpoint_id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class EndpointRotateSecretApi(APIView):
    """POST /webhook-endpoints/{endpoint_id}/rotate-secret."""

    @openapi.rotate_secret(response=EndpointWithSecretSerializer)
    def post(self, request: Request, endpoint_id: UUID) -> Response:
        endpoint = _endpoint_or_404(request, endpoint_id)
        secret = webhook_endpoint_rotate_secret(endpoint=endpoint)
        return Response(_with_secret(endpoint, secret))


@extend_schema_serializer(component_name="WebhookDelivery")
class DeliveryOutputSerializer(serializers.ModelSerializer):
    @extend_schema_serializer(component_name="WebhookAttempt")
    class AttemptSerializer(serializers.ModelSerializer):
        class Meta:
            model = WebhookAttempt
            fields = ["started_at", "status_code", "latency_ms", "response_excerpt", "error"]
            read_only_fields = fields

    event_id = serializers.UUIDField(read_only=True, help_text="Also its `webhook-id`.")
    event_type = serializers.CharField(source="event.type", read_only=True)
    subject_id = serializers.UUIDField(read_only=True, help_text="The call it is about.")
    attempt_log = AttemptSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event_id",
            "event_type",
            "subject_id",
            "sequence",
            "state",
            "attempts",
            "next_attempt_at",
            "delivered_at",
            "created_at",
            "attempt_log",
        ]
        read_only_fields = fields


class DeliveryPagination(NewestFirstCursorPagination):
    items = "Deliveries"


class EndpointDeliveriesApi(APIView):
    """GET /webhook-endpoints/{endpoint_id}/deliveries."""

    pagination_class = DeliveryPagination

    @openapi.list_deliveries(item=DeliveryOutputSerializer)
    def get(self, request: Request, endpoint_id: UUID) -> Response:
        endpoint = _endpoint_or_404(request, endpoint_id)
        deliveries = webhook_deliveries_for_endpoint(endpoint=endpoint)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(deliveries, request, view=self) or []
        return paginator.get_paginated_response(DeliveryOutputSerializer(page, many=True).data)


class EventRedeliverApi(APIView):
    """POST /webhook-events/{event_id}/redeliver."""

    @extend_schema_serializer(component_name="WebhookRedelivery")
    class OutputSerializer(serializers.Serializer):
        endpoints = serializers.IntegerField(help_text="How many endpoints it is sent to again.")

    @openapi.redeliver_event(response=OutputSerializer)
    def post(self, request: Request, event_id: UUID) -> Response:
        event = webhook_event_for_organization(
            organization_id=request_api_key(request).organization_id, event_id=event_id
        )
        if event is None:
            raise Http404
        count = event_redeliver(event=event)
        return Response(self.OutputSerializer({"endpoints": count}).data, status=202)
