from __future__ import annotations

from telephony.models import PhoneNumber, SipTrunk


def phone_number_get(*, number: str) -> PhoneNumber | None:
    """A number, whoever owns it, with everything placing a call from it needs, in one query.
    Whether the caller may use it is the caller's to judge (calls.permissions)."""
    # get(), not first(): a unique lookup needs no ORDER BY, and compiling one costs more CPU
    # than the query takes to run.
    try:
        return PhoneNumber.objects.select_related(
            "assistant", "conversation_flow__base_assistant", "provider_account"
        ).get(number=number)
    except PhoneNumber.DoesNotExist:
        return None


def sip_trunks_for_organization(*, organization_id: int) -> list[SipTrunk]:
    """The trunks a `sip` number of the organization dials through, in the order to try them."""
    return list(
        SipTrunk.objects.filter(organization_id=organization_id, enabled=True).order_by(
            "priority", "id"
        )
    )


def sip_trunks_registering() -> list[SipTrunk]:
    """Every enabled trunk that asks to be registered, whoever owns it (for the SIP agents)."""
    return list(SipTrunk.objects.filter(enabled=True, registers=True).order_by("priority", "id"))
