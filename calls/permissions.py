"""The initiate contract's 403s, as DRF object permissions.

The view looks up what the request names (`calls.selectors.caller_named`) and hands it to
`check_object_permissions`; these classes judge that object alone, reading neither the body nor
the database, and carry the contract's sentences. `caller_refusal` is the same rule for code
without a request (the `place_test_call` command).
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from burki.authentication import request_api_key
from calls.selectors import Caller


class CallerPermission(BasePermission):
    """Judges the `Caller` the view hands over; any other object is not its to judge."""

    @staticmethod
    def refusal(caller: Caller, organization_id: int | None) -> str | None:
        """The contract's 403 sentence when `organization_id` may not use `caller`, else None."""
        raise NotImplementedError

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        if not isinstance(obj, Caller):
            return True
        refusal = self.refusal(obj, request_api_key(request).organization_id)
        if refusal is not None:
            self.message = refusal  # what DRF's permission_denied answers with
        return refusal is None


class FromNumberBelongsToOrganization(CallerPermission):
    """A number of no one is refused in the same words as another organization's: the API is
    no oracle for who owns what."""

    @staticmethod
    def refusal(caller: Caller, organization_id: int | None) -> str | None:
        number = caller.phone_number
        if number is not None and number.organization_id == organization_id:
            return None
        return f"Unauthorized: phone number {caller.number} does not belong to your organization"


class AssistantBelongsToOrganization(CallerPermission):
    """An assistant asked for by id must be the organization's (an unknown id reads the same)."""

    @staticmethod
    def refusal(caller: Caller, organization_id: int | None) -> str | None:
        assistant = caller.assistant
        if caller.assistant_id is None or (
            assistant is not None and assistant.organization_id == organization_id
        ):
            return None
        return f"Unauthorized: assistant {caller.assistant_id} does not belong to your organization"


# In the order the API checks them, which decides the sentence when both refuse.
CALLER_PERMISSIONS = (FromNumberBelongsToOrganization, AssistantBelongsToOrganization)


def caller_refusal(caller: Caller, *, organization_id: int | None) -> str | None:
    """The first of the contract's 403 sentences that `caller` earns, in the API's order."""
    for permission in CALLER_PERMISSIONS:
        refusal = permission.refusal(caller, organization_id)
        if refusal is not None:
            return refusal
    return None
