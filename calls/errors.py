"""The initiate contract's error sentences, worded exactly as the public docs give them."""

from __future__ import annotations

from rest_framework import exceptions, status

from burki.exceptions import ApiError


def number_not_in_organization(number: str) -> str:
    return f"Unauthorized: phone number {number} does not belong to your organization"


def assistant_not_in_organization(assistant_id: int) -> str:
    return f"Unauthorized: assistant {assistant_id} does not belong to your organization"


class NotInOrganization(exceptions.PermissionDenied):
    default_code = "not_in_organization"


class NoAssistantFound(ApiError):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "no_assistant"

    def __init__(self, number: str) -> None:
        super().__init__(f"No assistant found for phone number {number}")


class AssistantInactive(ApiError):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "assistant_inactive"

    def __init__(self, assistant_id: int) -> None:
        super().__init__(f"Assistant {assistant_id} is not active")


class TooManyConcurrentCalls(ApiError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "too_many_concurrent_calls"
    # Sent as Retry-After by DRF's handler: calls end every few seconds in a busy organization.
    wait = 5

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Too many simultaneous calls: your organization's limit is {limit}. "
            "Try again when a call has ended."
        )
