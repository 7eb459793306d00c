from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet

from assistants.models import Assistant
from calls.errors import (
    NotInOrganization,
    assistant_not_in_organization,
    number_not_in_organization,
)
from calls.models import Call
from telephony.models import PhoneNumber
from telephony.selectors import phone_number_for_organization


def caller_phone_number(*, organization_id: int, number: str) -> PhoneNumber:
    """The caller's own number, or the contract's 403: a number of another organization and a
    number of no one get the same answer, so the API is no oracle for who owns what."""
    phone_number = phone_number_for_organization(organization_id=organization_id, number=number)
    if phone_number is None:
        raise NotInOrganization(number_not_in_organization(number))
    return phone_number


def caller_assistant(*, organization_id: int, assistant_id: int) -> Assistant:
    try:
        return Assistant.objects.get(pk=assistant_id, organization_id=organization_id)
    except Assistant.DoesNotExist:
        raise NotInOrganization(assistant_not_in_organization(assistant_id)) from None


def calls_for_organization(*, organization_id: int, status: str | None = None) -> QuerySet[Call]:
    calls = Call.objects.filter(organization_id=organization_id)
    if status:
        calls = calls.filter(status=status)
    return calls.order_by("-created_at", "-id")


# get(), not first(), for the lookups by key below: no ORDER BY to compile for one row.


def call_for_organization(*, organization_id: int, call_id: UUID) -> Call | None:
    try:
        return Call.objects.get(organization_id=organization_id, pk=call_id)
    except Call.DoesNotExist:
        return None


def call_for_webhook(*, call_id: UUID) -> Call | None:
    try:
        return Call.objects.select_related("provider_account").get(pk=call_id)
    except Call.DoesNotExist:
        return None
