from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from django.db.models import QuerySet
from django.utils import timezone

from assistants.models import Assistant
from assistants.selectors import assistant_get
from calls.models import Call
from telephony.models import PhoneNumber
from telephony.selectors import phone_number_get


@dataclass(frozen=True)
class Caller:
    """Our side of a call as a request names it: the number to call from and, if asked for, the
    assistant to speak, each with its row whoever owns it (None: no such row). The permission
    classes in calls.permissions judge whether the requester may use them."""

    number: str
    phone_number: PhoneNumber | None
    assistant_id: int | None = None
    assistant: Assistant | None = None


def caller_named(*, number: str, assistant_id: int | None = None) -> Caller:
    return Caller(
        number=number,
        phone_number=phone_number_get(number=number),
        assistant_id=assistant_id,
        assistant=None if assistant_id is None else assistant_get(assistant_id=assistant_id),
    )


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


def call_for_hang_up(*, organization_id: int, call_id: UUID) -> Call | None:
    """One of the organization's calls, with the account its provider is asked with."""
    try:
        return Call.objects.select_related("provider_account").get(
            organization_id=organization_id, pk=call_id
        )
    except Call.DoesNotExist:
        return None


def call_for_webhook(*, call_id: UUID) -> Call | None:
    try:
        return Call.objects.select_related("provider_account").get(pk=call_id)
    except Call.DoesNotExist:
        return None


def call_sid_taken(*, provider: str, call_sid: str) -> bool:
    """Whether one of our calls already has this id of the provider's."""
    return Call.objects.filter(provider=provider, call_sid=call_sid).exists()


def calls_in_progress(*, organization_id: int, up_to: int) -> int:
    """How many of the organization's calls are not final and could still be live, counting no
    further than `up_to` (the cap's question is only "is there room?", so the cost is bounded by
    the cap, not by how busy the organization is).

    A call counts until its money is settled (a webhook's word that it ended is not enough: the
    provider's record must say so too, or a forged end would free a slot), and never once its
    ring time and time limit have passed (`Call.live_until`; the provider enforces the limit),
    even if its end never came: such a call must not hold a slot forever. One index range scan
    (call_org_live, partial on the unsettled calls).
    """
    return Call.objects.filter(
        organization_id=organization_id, cost_cents__isnull=True, live_until__gt=timezone.now()
    )[:up_to].count()
