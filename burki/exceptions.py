"""One shape for every error: `{"detail": "<one sentence>"}`, field errors under `errors`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from billing.errors import InsufficientBalance
from burki.admin_site import admin_error_page
from burki.errors import DomainError
from calls.errors import (
    AssistantInactive,
    CallNotConfirmed,
    CallNotInProgress,
    CallsPerSecondExceeded,
    HangUpFailed,
    IdempotencyKeyInFlight,
    IdempotencyKeyInvalid,
    IdempotencyKeyReused,
    MachineDetectionUnsupported,
    NoAssistantFound,
    NumberOnDoNotCallList,
    ProviderFailed,
    ProviderTimedOut,
    ProviderUnavailable,
    TooManyConcurrentCalls,
    TransferFailed,
    TransferUnsupported,
)
from calls.templating import TemplateError
from campaigns.errors import CampaignConflict

logger = logging.getLogger(__name__)


# Every domain error's HTTP status, the one place where a rule of ours becomes HTTP. A class
# not listed takes its nearest listed base's status (a DomainError of its own: 400).
STATUS_OF_ERROR: dict[type[DomainError], int] = {
    DomainError: status.HTTP_400_BAD_REQUEST,
    TemplateError: status.HTTP_400_BAD_REQUEST,
    IdempotencyKeyInvalid: status.HTTP_400_BAD_REQUEST,
    InsufficientBalance: status.HTTP_402_PAYMENT_REQUIRED,
    NumberOnDoNotCallList: status.HTTP_403_FORBIDDEN,
    NoAssistantFound: status.HTTP_404_NOT_FOUND,
    AssistantInactive: status.HTTP_404_NOT_FOUND,
    IdempotencyKeyInFlight: status.HTTP_409_CONFLICT,
    CallNotConfirmed: status.HTTP_409_CONFLICT,
    CampaignConflict: status.HTTP_409_CONFLICT,
    HangUpFailed: status.HTTP_502_BAD_GATEWAY,
    IdempotencyKeyReused: status.HTTP_422_UNPROCESSABLE_ENTITY,
    TooManyConcurrentCalls: status.HTTP_429_TOO_MANY_REQUESTS,
    CallsPerSecondExceeded: status.HTTP_429_TOO_MANY_REQUESTS,
    ProviderFailed: status.HTTP_502_BAD_GATEWAY,
    ProviderUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
    ProviderTimedOut: status.HTTP_504_GATEWAY_TIMEOUT,
    # Call control (answering-machine detection, transfer).
    MachineDetectionUnsupported: status.HTTP_422_UNPROCESSABLE_ENTITY,
    TransferUnsupported: status.HTTP_422_UNPROCESSABLE_ENTITY,
    CallNotInProgress: status.HTTP_409_CONFLICT,
    TransferFailed: status.HTTP_502_BAD_GATEWAY,
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


def in_admin(request: HttpRequest) -> bool:
    return request.path.startswith(reverse("admin:index"))


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if in_admin(request):
        # The same page for another organization's row as for no row at all.
        return admin_error_page(
            request, 404, "Not found", "There is no such page here, or nothing you may see."
        )
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"detail": "Internal server error."}, status=500)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Bad request."}, status=400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if in_admin(request):
        return admin_error_page(
            request, 403, "Not allowed", "Your account may not do this. Ask an operator."
        )
    return JsonResponse({"detail": "Forbidden."}, status=403)


class ErrorsAsInProductionMiddleware:
    """With DEBUG on, Django answers an error with its HTML debug page (a 404's lists every URL
    pattern). Here the API answers as in production, `{"detail": ...}`, whatever the mode; only
    a server error in the admin keeps the debug page, the one place a developer reads it. (An
    unknown path never reaches a view: `burki.urls` ends with one that answers it.)"""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not settings.DEBUG:
            return None  # Django's handlers (urls.handler404, ...) answer already
        if isinstance(exception, Http404):
            return not_found(request, exception)
        if isinstance(exception, PermissionDenied):
            return permission_denied(request, exception)
        if in_admin(request):
            return None
        if isinstance(exception, BadRequest | SuspiciousOperation):
            return bad_request(request, exception)
        # What Django does with an uncaught exception, less the page: tell the test client and
        # log the traceback.
        signals.got_request_exception.send(sender=None, request=request)
        logging.getLogger("django.request").error(
            "Internal Server Error: %s", request.path, exc_info=exception
        )
        return server_error(request)
