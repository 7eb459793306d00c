"""The initiate contract's 403s, as DRF permission classes.

They read the validated input from the view (so a 400 comes before a 403) and leave what they
looked up on it, so the view does not query the same rows again.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from burki.authentication import request_api_key
from calls.selectors import caller_assistant, caller_phone_number


class FromNumberBelongsToOrganization(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method != "POST":
            return True  # the view answers 405
        data = view.validated_input(request)
        view.phone_number = caller_phone_number(
            organization_id=request_api_key(request).organization_id,
            number=data["from_phone_number"],
        )
        return True


class AssistantBelongsToOrganization(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method != "POST":
            return True
        assistant_id = view.validated_input(request).get("assistant_id")
        view.assistant = (
            None
            if assistant_id is None
            else caller_assistant(
                organization_id=request_api_key(request).organization_id, assistant_id=assistant_id
            )
        )
        return True
