"""One shape for every error: `{"detail": "<one sentence>"}`, field errors under `errors`."""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from billing.errors import InsufficientBalance
from burki.errors import DomainError
from calls.errors import (
    AssistantInactive,
    CallNotConfirmed,
    HangUpFailed,
    IdempotencyKeyInFlight,
    IdempotencyKeyInvalid,
    IdempotencyKeyReused,
    NoAssistantFound,
    ProviderFailed,
    ProviderTimedOut,
    ProviderUnavailable,
    TooManyConcurrentCalls,
)
from calls.templating import TemplateError

logger = logging.getLogger(__name__)


# Every domain error's HTTP status, the one place where a rule of ours becomes HTTP. A class
# not listed takes its nearest listed base's status (a DomainError of its own: 400).
STATUS_OF_ERROR: dict[type[DomainError], int] = {
    DomainError: status.HTTP_400_BAD_REQUEST,
    TemplateError: status.HTTP_400_BAD_REQUEST,
    IdempotencyKeyInvalid: status.HTTP_400_BAD_REQUEST,
    InsufficientBalance: status.HTTP_402_PAYMENT_REQUIRED,
    NoAssistantFound: status.HTTP_404_NOT_FOUND,
    AssistantInactive: status.HTTP_404_NOT_FOUND,
    IdempotencyKeyInFlight: status.HTTP_409_CONFLICT,
    CallNotConfirmed: status.HTTP_409_CONFLICT,
    HangUpFailed: status.HTTP_502_BAD_GATEWAY,
    IdempotencyKeyReused: status.HTTP_422_UNPROCESSABLE_ENTITY,
    TooManyConcurrentCalls: status.HTTP_429_TOO_MANY_REQUESTS,
    ProviderFailed: status.HTTP_502_BAD_GATEWAY,
    ProviderUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
    ProviderTimedOut: status.HTTP_504_GATEWAY_TIMEOUT,
}


def status_of_error(error: DomainError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_OF_ERROR:
            return STATUS_OF_ERROR[cls]
    raise AssertionError("unreachable: DomainError is in the table")


def as_api_exception(error: DomainError) -> exceptions.APIException:
    """The DRF exception DRF's own handler turns into the response (so it still rolls back an
    atomic request and sets `Retry-After`)."""
    exc = exceptions.APIException(error.message, code=error.code)
    exc.status_code = status_of_error(error)
    retry_after = getattr(error, "retry_after_seconds", None)
    if retry_after is not None:
        exc.wait = retry_after  # type: ignore[attr-defined]
    return exc


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
    extra = exc.extra if isinstance(exc, DomainError) else {}
    if isinstance(exc, DomainError):
        exc = as_api_exception(exc)
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
    if extra:
        response.data.update(extra)
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
