from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from assistants.models import Assistant
from calls.errors import (
    NotInOrganization,
    assistant_not_in_organization,
    number_not_in_organization,
)
from calls.models import Call
from telephony.models import PhoneNumber
from telephony.selectors import phone_number_for_organization
from telephony.states import FINAL_STATES

# No assistant allows a longer call (assistants.Assistant's check constraint).
MAX_TIME_LIMIT_SECONDS = 86400


def caller_phone_number(*, organization_id: int, number: str) -> PhoneNumber:
    """The caller's own number, or the contract's 403: a number of another organization and a
    number of no one get the same answer, so the API is no oracle for who owns what."""
    phone_number = phone_number_for_organization(organization_id=organization_id, number=number)
    if phone_number is None:
        raise NotInOrganization(number_not_in_organization(number))
    return phone_number


def caller_assistant(*, organization_id: int, assistant_id: int) -> Assistant:
    assistant = Assistant.objects.filter(pk=assistant_id, organization_id=organization_id).first()
    if assistant is None:
        raise NotInOrganization(assistant_not_in_organization(assistant_id))
    return assistant


def calls_for_organization(*, organization_id: int, status: str | None = None) -> QuerySet[Call]:
    calls = Call.objects.filter(organization_id=organization_id)
    if status:
        calls = calls.filter(status=status)
    return calls.order_by("-created_at", "-id")


def call_for_organization(*, organization_id: int, call_id: UUID) -> Call | None:
    return Call.objects.filter(organization_id=organization_id, pk=call_id).first()


def call_for_webhook(*, call_id: UUID) -> Call | None:
    return Call.objects.select_related("provider_account").filter(pk=call_id).first()


def calls_in_progress(*, organization_id: int) -> int:
    """Calls of the organization that are not final and could still be live.

    A call is over once its time limit and the ring time have passed (the provider enforces the
    limit), even if its final webhook never came: such a call must not hold a slot forever.
    The exact cut is made here rather than in SQL, which keeps it portable; the rows are the
    organization's unfinished calls of the last day, a handful.
    """
    now = timezone.now()
    slack = timedelta(seconds=settings.CALL_RING_TIMEOUT_SECONDS + 60)
    rows = (
        Call.objects.filter(
            organization_id=organization_id,
            created_at__gt=now - timedelta(seconds=MAX_TIME_LIMIT_SECONDS) - slack,
        )
        .exclude(status__in=FINAL_STATES)
        .values_list("created_at", "time_limit_seconds")
    )
    return sum(
        1 for created_at, limit in rows if created_at + timedelta(seconds=limit) + slack > now
    )
