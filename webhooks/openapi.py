"""The OpenAPI declarations of the webhook endpoints API (drf-spectacular), kept out of the
views; each function returns one operation's `extend_schema`."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema

from burki.schema import (
    AUTHENTICATION_ERRORS,
    BAD_CURSOR,
    RETRY_AFTER,
    WWW_AUTHENTICATE,
    SerializerClass,
    error_response,
    rate_limited,
)
from webhooks.models import EVENT_TYPES

TAGS = ["webhooks"]
PARAMETERS = [WWW_AUTHENTICATE, RETRY_AFTER]

DELIVERY = (
    'Each event is POSTed as JSON `{"type", "timestamp", "data"}`, signed per Standard '
    "Webhooks: headers `webhook-id` (the event's id, the same on every retry: deduplicate on "
    "it), `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature` (`v1,` + "
    "base64 HMAC-SHA256 of `id.timestamp.body` with the secret; two of them, space-separated, "
    "while a rotated secret overlaps). Answer 2xx to take it; anything else, or no answer "
    "within the time-out, is retried on `WEBHOOK_RETRY_SCHEDULE`; 410 disables the endpoint. "
    "One call's events arrive in `data.sequence` order."
)

NOT_FOUND = {
    404: error_response(
        "No webhook endpoint with this id in your organization (or, on a list, a cursor we "
        "did not hand out).",
        ("Unknown endpoint", "Not found."),
        ("Bad cursor", "Invalid cursor"),
    )
}

BAD_BODY = {
    400: error_response(
        "A field is missing or invalid; `errors` says which. Nothing was changed.",
        ("Private address", "url must not point at a private address"),
        (
            "Unknown event type",
            "events: each must be one of " + ", ".join(EVENT_TYPES),
        ),
    )
}


def list_endpoints(*, item: SerializerClass) -> Any:
    return extend_schema(
        operation_id="webhook_endpoints_list",
        summary="List webhook endpoints",
        description="Your organization's webhook endpoints, newest first (secrets never shown).",
        tags=TAGS,
        parameters=PARAMETERS,
        responses={
            200: item(many=True),
            **AUTHENTICATION_ERRORS,
            **BAD_CURSOR,
            429: rate_limited(),
        },
    )


def create_endpoint(*, request: SerializerClass, response: SerializerClass) -> Any:
    return extend_schema(
        operation_id="webhook_endpoints_create",
        summary="Create a webhook endpoint",
        description=(
            "Have the events of your calls sent to `url`. The answer carries the signing "
            "secret, shown only this once (and when it is rotated). " + DELIVERY
        ),
        tags=TAGS,
        request=request,
        parameters=PARAMETERS,
        responses={201: response, **BAD_BODY, **AUTHENTICATION_ERRORS, 429: rate_limited()},
    )


def retrieve_endpoint(*, response: SerializerClass) -> Any:
    return extend_schema(
        operation_id="webhook_endpoints_retrieve",
        summary="Retrieve a webhook endpoint",
        tags=TAGS,
        parameters=PARAMETERS,
        responses={200: response, **AUTHENTICATION_ERRORS, **NOT_FOUND, 429: rate_limited()},
    )


def update_endpoint(*, request: SerializerClass, response: SerializerClass) -> Any:
    return extend_schema(
        operation_id="webhook_endpoints_partial_update",
        summary="Change a webhook endpoint",
        description="Change its `url`, its `events`, or whether it is `enabled`.",
        tags=TAGS,
        request=request,
        parameters=PARAMETERS,
        responses={
            200: response,
            **BAD_BODY,
            **AUTHENTICATION_ERRORS,
            **NOT_FOUND,
            429: rate_limited(),
        },
    )


def delete_endpoint() -> Any:
    return extend_schema(
        operation_id="webhook_endpoints_destroy",
        summary="Delete a webhook endpoint",
        description="Nothing more is sent to it; its deliveries are forgotten.",
        tags=TAGS,
        parameters=PARAMETERS,
        responses={
            204: OpenApiResponse(description="Deleted."),
            **AUTHENTICATION_ERRORS,
            **NOT_FOUND,
            429: rate_limited(),
        },
    )


def rotate_secret(*, response: SerializerClass) -> Any:
    return extend_schema(
        operation_id="webhook_endpoints_rotate_secret",
        summary="Rotate a webhook endpoint's secret",
        description=(
            "A new signing secret, shown only now. For `WEBHOOK_SECRET_OVERLAP_SECONDS` "
            "(a day by default) every delivery carries a signature with the old secret too, so "
            "your receiver can switch over without losing one."
        ),
        tags=TAGS,
        request=None,
        parameters=PARAMETERS,
        responses={200: response, **AUTHENTICATION_ERRORS, **NOT_FOUND, 429: rate_limited()},
    )


def list_deliveries(*, item: SerializerClass) -> Any:
    return extend_schema(
        operation_id="webhook_endpoints_deliveries_list",
        summary="List an endpoint's deliveries",
        description=(
            "Every event sent (or to be sent) to this endpoint, newest first, with each "
            "attempt: when, the status code, how long it took, the start of your answer, or "
            "the error."
        ),
        tags=TAGS,
        parameters=PARAMETERS,
        responses={200: item(many=True), **AUTHENTICATION_ERRORS, **NOT_FOUND, 429: rate_limited()},
    )


def redeliver_event(*, response: SerializerClass) -> Any:
    return extend_schema(
        operation_id="webhook_events_redeliver",
        summary="Send an event again",
        description=(
            "Send the event again, with the same `webhook-id`, to every enabled endpoint it is "
            "for, whatever became of it before."
        ),
        tags=TAGS,
        request=None,
        parameters=PARAMETERS,
        responses={
            202: response,
            **AUTHENTICATION_ERRORS,
            404: error_response(
                "No event with this id in your organization.", ("Unknown event", "Not found.")
            ),
            429: rate_limited(),
        },
    )
