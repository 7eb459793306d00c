"""BYO SIP trunk calls end to end: the API, a real `sip_agent` process (PJSIP) and SIPp as the
carrier, all on 127.0.0.1. SIPp's exit code and error log are part of every verdict."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from billing.models import Balance
from calls.models import Call
from tests.conftest import Tenant, assert_money_consistent, make_tenant
from tests.factories import AssistantFactory, PhoneNumberFactory, SipTrunkFactory
from tests.sip_harness import (
    AGENT_CONTROL_PORT,
    SECRET,
    SIPP_PORTS,
    AgentProcess,
    Sipp,
    sent_invites,
)

pytestmark = pytest.mark.django_db(transaction=True)

FROM = "+15551234567"
TO = "+15559876543"


@pytest.fixture
def sip_settings(settings):
    settings.SIP_AGENTS = [f"127.0.0.1:{AGENT_CONTROL_PORT}"]
    settings.SIP_AGENT_SECRET = SECRET
    settings.SIP_AGENT_TIMEOUT_SECONDS = 5.0
    settings.CALL_RING_TIMEOUT_SECONDS = 30
    return settings


@pytest.fixture
def tenant(transactional_db) -> Tenant:
    return make_tenant()


@pytest.fixture
def agent(sip_settings, tmp_path: Path):
    process = AgentProcess(tmp_path / "agent.log")
    yield process
    code = process.stop()
    assert code == 0, process.output()
    assert "Traceback" not in process.output(), process.output()


@pytest.fixture
def sipp_cleanup():
    peers: list[Sipp] = []
    yield peers
    for peer in peers:
        peer.kill()


def start_sipp(peers: list[Sipp], tmp_path: Path, scenario: str, **kwargs) -> Sipp:
    peer = Sipp(tmp_path, scenario, **kwargs)
    peers.append(peer)
    return peer


def sip_number(tenant: Tenant, *gateways: str, max_seconds: int = 600, **trunk_fields):
    for priority, gateway in enumerate(gateways):
        SipTrunkFactory(
            organization=tenant.organization,
            name=f"trunk {'AB'[priority]}",
            gateway=gateway,
            priority=priority,
            **trunk_fields,
        )
    assistant = AssistantFactory(
        organization=tenant.organization, max_call_duration_seconds=max_seconds
    )
    return PhoneNumberFactory(
        organization=tenant.organization, number=FROM, provider="sip", assistant=assistant
    )


def initiate(tenant: Tenant):
    body = {"from_phone_number": FROM, "to_phone_number": TO}
    return tenant.client.post("/calls/initiate", body, format="json")


def wait_until_final(call_id: str, timeout: float = 30.0) -> Call:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        call = Call.objects.get(pk=call_id)
        if call.is_final:
            return call
        time.sleep(0.05)
    raise AssertionError(f"call still {Call.objects.get(pk=call_id).status} after {timeout} s")


def timeline(call: Call) -> list[str]:
    return list(call.events.values_list("status", flat=True))


def held(tenant: Tenant) -> int:
    return Balance.objects.get(organization=tenant.organization).held_cents


def test_an_answered_call_is_recorded_from_invite_to_bye_and_settled(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path
) -> None:
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_answer_then_bye.xml")
    sip_number(tenant, sipp.gateway)

    response = initiate(tenant)

    assert response.status_code == 200, response.json()
    body = response.json()
    call = wait_until_final(body["call_id"])
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    assert body == {
        "message": "Call initiated successfully",
        "call_sid": call.call_sid,
        "call_id": str(call.pk),
    }
    (invite,) = sent_invites(verdict.messages)
    assert invite.startswith(f"INVITE sip:{TO}@127.0.0.1:{SIPP_PORTS[0]} SIP/2.0")
    assert f"Call-ID: {call.call_sid}" in invite
    assert f"\nFrom: sip:{FROM}@127.0.0.1;tag=" in invite
    assert f"\nTo: sip:{TO}@127.0.0.1\n" in invite
    assert "\nc=IN IP4 127.0.0.1\n" in invite and "\na=rtpmap:0 PCMU/8000\n" in invite
    assert (call.status, call.end_reason, call.duration_seconds) == (
        "completed",
        "callee hung up (BYE)",
        1,
    )
    assert call.cost_cents == 1  # one second at 10 cents a minute, rounded up
    assert timeline(call) == ["ringing", "in-progress", "completed"]
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)

    detail = tenant.client.get(f"/calls/{call.pk}").json()
    assert (detail["status"], detail["call_sid"], detail["cost_cents"]) == (
        "completed",
        call.call_sid,
        1,
    )
    assert [e["status"] for e in detail["events"]] == ["ringing", "in-progress", "completed"]
    answered = detail["events"][1]["detail"]
    assert answered == {
        "sip_call_id": call.call_sid,
        "trunk": "trunk A",
        "media": {"stream_url": "wss://media.burki.test/stream", "bridged": False},
    }
    ended = detail["events"][2]["detail"]
    assert ended["sip_status"] == 200 and ended["attempts"] == [
        {"trunk": "trunk A", "sip_call_id": call.call_sid, "sip_status": 200, "sip_reason": "Normal call clearing"}
    ]
    assert ended["rtp"]["packets_sent"] > 0
