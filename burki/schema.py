"""OpenAPI pieces every API view shares: the Bearer scheme, the error body and its responses.

Each app declares its operations in an `openapi.py` beside its views (calls/openapi.py,
billing/openapi.py), so the views read as what they do; this module only holds what they have in
common, so a new status or header is one more entry there.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework import serializers
from rest_framework.exceptions import Throttled

# What each app's openapi.py is handed: a view's own (nested) serializer class.
SerializerClass = type[serializers.Serializer[Any]]


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "burki.authentication.ApiKeyAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "Bearer authentication header of the form `Bearer <token>`, where `<token>` is "
                "your organization's API key. A key is shown once, when it is created."
            ),
        }


class ErrorSerializer(serializers.Serializer):
    """Every error, whatever its status."""

    detail = serializers.CharField(help_text="What went wrong, in one sentence.")
    # A field, not DRF's Serializer.errors: the metaclass moves declared fields off the class.
    errors = serializers.DictField(  # type: ignore[assignment]
        required=False,
        help_text="On a 400 for a bad field: every field's messages, keyed by field name.",
    )


def error_response(description: str, *examples: tuple[str, str]) -> OpenApiResponse:
    """An error response with one example body per (summary, detail) pair."""
    return OpenApiResponse(
        response=ErrorSerializer,
        description=description,
        examples=[
            OpenApiExample(summary, value={"detail": detail}, response_only=True)
            for summary, detail in examples
        ],
    )


AUTHENTICATION_ERRORS = {
    401: error_response(
        "The API key is missing, malformed, unknown or revoked. The `WWW-Authenticate` header "
        "names the scheme.",
        ("No key", "Authentication credentials were not provided."),
        ("Unknown key", "Invalid API key."),
        ("Revoked key", "This API key has been revoked."),
    ),
}

# A list's 404: its `cursor` parameter is not one we handed out.
BAD_CURSOR = {
    404: error_response("The cursor is not one we handed out.", ("Bad cursor", "Invalid cursor"))
}

WWW_AUTHENTICATE = OpenApiParameter(
    "WWW-Authenticate",
    str,
    location=OpenApiParameter.HEADER,
    response=[401],
    description='The authentication scheme to use: `Bearer realm="api"`.',
)


def method_not_allowed(allowed: str) -> OpenApiResponse:
    return error_response(
        f"Any method but {allowed} on this path.",
        ("Wrong method", 'Method "DELETE" not allowed.'),
    )


RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    int,
    location=OpenApiParameter.HEADER,
    response=[429],
    description="How many seconds to wait before trying again.",
)


def rate_limited(*examples: tuple[str, str], also: str = "") -> OpenApiResponse:
    """429 for the API key's request rate, which every authenticated operation has; an
    operation with a limit of its own adds it with `also` and its (summary, detail) examples.

    A function, not a constant: DRF's throttling sentence is translated text, read here when a
    view is decorated rather than when this module is imported.
    """
    return error_response(
        "Too many requests: your API key made more requests a minute than it may"
        + (f", or {also}" if also else "")
        + ". Nothing was done; `Retry-After` says how many seconds to wait.",
        *examples,
        ("Request rate", str(Throttled(wait=60).detail)),
    )
