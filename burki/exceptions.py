"""One shape for every error: `{"detail": "<one sentence>"}`, field errors under `errors`."""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """Base for domain errors: a status, a code and one sentence."""


class InsufficientBalance(ApiError):
    status_code = status.HTTP_402_PAYMENT_REQUIRED
    default_code = "insufficient_balance"
    default_detail = "Insufficient balance. Please add funds to continue making calls."


class ProviderFailed(ApiError):
    status_code = status.HTTP_502_BAD_GATEWAY
    default_code = "provider_error"
    default_detail = "The telephony provider could not place the call."


class ProviderTimedOut(ApiError):
    status_code = status.HTTP_504_GATEWAY_TIMEOUT
    default_code = "provider_timeout"
    default_detail = "The telephony provider did not answer in time; the call was not placed."


class ProviderUnavailable(ApiError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "provider_unavailable"
    default_detail = "The telephony provider is not available right now; try again shortly."


def first_error_message(detail: Any, field: str | None = None) -> str:
    """The first error sentence of a (possibly nested) ValidationError detail."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = (
                field if key == "non_field_errors" else key if field is None else f"{field}.{key}"
            )
            return first_error_message(value, name)
        return "Invalid request."
    if isinstance(detail, list):
        return first_error_message(detail[0], field) if detail else "Invalid request."
    message = str(detail)
    if field and field not in ("non_field_errors",) and not message.startswith(field):
        return f"{field}: {message}"
    return message


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = exception_handler(exc, context)
    if response is None:
        return None  # Not an API error: Django's 500 handler (and our logging) take it.
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        response.data = {"detail": first_error_message(detail)}
        if isinstance(detail, dict):
            response.data["errors"] = detail
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"detail": str(response.data["detail"])}
    else:
        response.data = {"detail": first_error_message(response.data)}
    return response


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Not found."}, status=404)


def json_server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"detail": "Internal server error."}, status=500)


def json_bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Bad request."}, status=400)


def json_permission_denied(
    request: HttpRequest, exception: Exception | None = None
) -> JsonResponse:
    return JsonResponse({"detail": "Forbidden."}, status=403)
