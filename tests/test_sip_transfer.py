"""A cold transfer of a SIP call: REFER to the callee through the call's trunk, SIPp as the far
end that accepts it (202, then NOTIFY 200) or refuses it (405)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.utils import timezone

from calls.models import Call
from telephony.providers import get_provider
from telephony.providers.base import Account, CallRecordQuery, ProviderError
from tests import test_sip_calls
from tests.conftest import Tenant, assert_money_consistent
from tests.sip_harness import SIPP_PORTS
from tests.test_sip_calls import held, initiate, sip_number, start_sipp, wait_until_final

pytestmark = pytest.mark.django_db(transaction=True)

sip_settings = test_sip_calls.sip_settings
tenant = test_sip_calls.tenant
sipp_cleanup = test_sip_calls.sipp_cleanup
agent = test_sip_calls.agent

ELSEWHERE = "+15550001111"


def in_progress(call_id: str) -> Call:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        call = Call.objects.get(pk=call_id)
        if call.status == "in-progress":
            return call
        time.sleep(0.05)
    raise AssertionError(f"call still {Call.objects.get(pk=call_id).status}")


def query(call: Call) -> CallRecordQuery:
    return CallRecordQuery(
        call_id=str(call.pk),
        call_sid=call.call_sid,
        to_number=call.to_number,
        time_limit_seconds=call.time_limit_seconds,
        placed_at=call.initiated_at or call.created_at,
    )


def test_a_transfer_sends_refer_and_the_call_ends_once_the_new_call_is_up(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path
) -> None:
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_refer_accept.xml")
    sip_number(tenant, sipp.gateway)
    call = in_progress(initiate(tenant).json()["call_id"])

    assert get_provider("sip").can_transfer
    get_provider("sip").transfer(query(call), Account(), to_number=ELSEWHERE)

    call = wait_until_final(str(call.pk))
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    refer = verdict.messages[verdict.messages.index("\nREFER sip:") :]
    assert f"\nRefer-To: sip:{ELSEWHERE}@127.0.0.1:{SIPP_PORTS[0]}\n" in refer
    assert (call.status, call.end_reason) == ("completed", f"transferred to {ELSEWHERE} (BYE sent)")
    assert call.cost_cents == -(-call.duration_seconds * 10 // 60)
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_a_trunk_that_refuses_refer_fails_the_transfer_and_the_call_goes_on(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path
) -> None:
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_refer_refuse.xml")
    sip_number(tenant, sipp.gateway)
    call = in_progress(initiate(tenant).json()["call_id"])

    with pytest.raises(ProviderError) as refused:
        get_provider("sip").transfer(query(call), Account(), to_number=ELSEWHERE)

    assert str(refused.value) == "The far end refused the transfer (405 Method Not Allowed)."
    time.sleep(0.3)
    assert Call.objects.get(pk=call.pk).status == "in-progress"
    get_provider("sip").hang_up(query(call), Account(), answered=True)
    call = wait_until_final(str(call.pk))
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    assert (call.status, call.end_reason) == ("completed", "hung up on request (BYE sent)")
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_a_transfer_of_a_call_no_agent_carries_is_an_error(tenant: Tenant, agent) -> None:
    sip_number(tenant, f"127.0.0.1:{SIPP_PORTS[0]}")
    ghost = CallRecordQuery(
        call_id="00000000-0000-0000-0000-000000000000",
        call_sid="nobody@here",
        to_number="+15559876543",
        time_limit_seconds=60,
        placed_at=timezone.now(),
    )

    with pytest.raises(ProviderError) as refused:
        get_provider("sip").transfer(ghost, Account(), to_number=ELSEWHERE)

    assert str(refused.value) == "No SIP agent is carrying the call."
