from __future__ import annotations

from telephony.models import PhoneNumber, SipTrunk


def phone_number_for_organization(*, organization_id: int, number: str) -> PhoneNumber | None:
    """The organization's number with everything placing a call from it needs, in one query."""
    return (
        PhoneNumber.objects.select_related(
            "assistant", "conversation_flow__base_assistant", "provider_account"
        )
        .filter(organization_id=organization_id, number=number)
        .first()
    )


def sip_trunks_for_organization(*, organization_id: int) -> list[SipTrunk]:
    """The trunks a `sip` number of the organization dials through, in the order to try them."""
    return list(
        SipTrunk.objects.filter(organization_id=organization_id, enabled=True).order_by(
            "priority", "id"
        )
    )
