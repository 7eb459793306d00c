"""BYO SIP trunk calls end to end: the API, a real `sip_agent` process (PJSIP) and SIPp as the
carrier, all on 127.0.0.1. SIPp's exit code and error log are part of every verdict."""

from __future__ import annotations

import io
import json
import time
import uuid
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from billing import services as billing_services
from billing.models import Balance
from calls.models import Call
from calls.services import calls_sweep
from telephony.providers import get_provider
from telephony.providers.base import Account, PlacedCallQuery, StatusEvent
from telephony.sip import control as sip_control
from telephony.sip.provider import SipProvider
from tests.conftest import Tenant, assert_money_consistent, make_tenant
from tests.factories import AssistantFactory, PhoneNumberFactory, SipTrunkFactory
from tests.sip_harness import (
    AGENT_CONTROL_PORT,
    NO_MEDIA_STREAM,
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
    settings.MEDIA_STREAM_URL = NO_MEDIA_STREAM
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
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_answer_then_bye.xml", extra=("-rtp_echo",))
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
        "media": {"stream_url": NO_MEDIA_STREAM, "bridged": True},
    }
    ended = detail["events"][2]["detail"]
    assert ended["sip_status"] == 200 and ended["attempts"] == [
        {
            "trunk": "trunk A",
            "sip_call_id": call.call_sid,
            "sip_status": 200,
            "sip_reason": "Normal call clearing",
        }
    ]
    # RTP flowed both ways: our silence out, SIPp's echo of it back in.
    assert ended["rtp"]["packets_sent"] > 10 and ended["rtp"]["packets_received"] > 10
    # Nothing listens at the media stream's URL: the agent kept retrying and kept the call up.
    assert ended["media"]["connects"] == 0
    assert "Connect call failed" in ended["media"]["error"]


def test_digest_authentication_answers_the_401_challenge(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path
) -> None:
    sipp = start_sipp(
        sipp_cleanup,
        tmp_path,
        "uas_digest_auth.xml",
        extra=("-inf", str(Path(__file__).parent / "sipp" / "trunk_credentials.csv")),
    )
    sip_number(tenant, sipp.gateway, username="alice", password="s3cret")

    response = initiate(tenant)

    assert response.status_code == 200, response.json()
    call = wait_until_final(response.json()["call_id"])
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    first, second = sent_invites(verdict.messages)
    assert "Authorization:" not in first
    assert 'Authorization: Digest username="alice", realm="trunk.test"' in second
    assert f'uri="sip:{TO}@127.0.0.1:{SIPP_PORTS[0]}"' in second
    assert "s3cret" not in verdict.messages
    assert "SIP/2.0 403 Forbidden" not in verdict.messages
    assert (call.status, call.end_reason, call.duration_seconds) == (
        "completed",
        "callee hung up (BYE)",
        1,
    )
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_wrong_trunk_credentials_fail_the_call_with_the_403(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path
) -> None:
    sipp = start_sipp(
        sipp_cleanup,
        tmp_path,
        "uas_digest_auth.xml",
        extra=("-inf", str(Path(__file__).parent / "sipp" / "trunk_credentials.csv")),
    )
    sip_number(tenant, sipp.gateway, username="alice", password="wrong")

    response = initiate(tenant)

    assert response.status_code == 200, response.json()
    call = wait_until_final(response.json()["call_id"])
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    assert "SIP/2.0 403 Forbidden" in verdict.messages
    assert (call.status, call.end_reason, call.cost_cents) == ("failed", "403 Forbidden", 0)
    assert timeline(call) == ["failed"]
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


@pytest.mark.parametrize(
    ("scenario", "status", "reason"),
    [
        ("uas_reject_486.xml", "busy", "486 Busy Here"),
        ("uas_reject_404.xml", "failed", "404 Not Found"),
    ],
)
def test_a_refusal_from_the_far_end_ends_the_call_with_its_sip_status(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path, scenario: str, status: str, reason: str
) -> None:
    sipp = start_sipp(sipp_cleanup, tmp_path, scenario)
    sip_number(tenant, sipp.gateway)

    response = initiate(tenant)

    assert response.status_code == 200, response.json()
    call = wait_until_final(response.json()["call_id"])
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    assert (call.status, call.end_reason, call.cost_cents, call.duration_seconds) == (
        status,
        reason,
        0,
        0,
    )
    assert call.events.get().detail["sip_status"] == int(reason[:3])
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_a_503_from_the_first_trunk_fails_over_to_the_second(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path
) -> None:
    down = start_sipp(sipp_cleanup, tmp_path, "uas_reject_503.xml", port=SIPP_PORTS[0])
    up = start_sipp(sipp_cleanup, tmp_path, "uas_answer_then_bye.xml", port=SIPP_PORTS[1])
    sip_number(tenant, down.gateway, up.gateway)

    response = initiate(tenant)

    assert response.status_code == 200, response.json()
    call = wait_until_final(response.json()["call_id"])
    down_verdict, up_verdict = down.verdict(), up.verdict()
    assert (down_verdict.exit_code, down_verdict.errors) == (0, "")
    assert (up_verdict.exit_code, up_verdict.errors) == (0, "")
    (first_invite,) = sent_invites(down_verdict.messages)
    (second_invite,) = sent_invites(up_verdict.messages)
    # The call_sid is the first INVITE's Call-ID; the answered leg's is in the timeline.
    assert f"Call-ID: {call.call_sid}" in first_invite
    ended = call.events.get(status="completed").detail
    assert f"Call-ID: {ended['sip_call_id']}" in second_invite
    assert ended["attempts"] == [
        {
            "trunk": "trunk A",
            "sip_call_id": call.call_sid,
            "sip_status": 503,
            "sip_reason": "Service Unavailable",
        },
        {
            "trunk": "trunk B",
            "sip_call_id": ended["sip_call_id"],
            "sip_status": 200,
            "sip_reason": "Normal call clearing",
        },
    ]
    assert (call.status, call.duration_seconds, call.cost_cents) == ("completed", 1, 1)
    assert timeline(call) == ["ringing", "in-progress", "completed"]
    assert_money_consistent(tenant.organization)


def test_a_503_from_every_trunk_fails_the_call(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path
) -> None:
    first = start_sipp(sipp_cleanup, tmp_path, "uas_reject_503.xml", port=SIPP_PORTS[0])
    second = start_sipp(sipp_cleanup, tmp_path, "uas_reject_503.xml", port=SIPP_PORTS[1])
    sip_number(tenant, first.gateway, second.gateway)

    response = initiate(tenant)

    assert response.status_code == 200, response.json()
    call = wait_until_final(response.json()["call_id"])
    for verdict in (first.verdict(), second.verdict()):
        assert (verdict.exit_code, verdict.errors) == (0, "")
    assert (call.status, call.end_reason, call.cost_cents) == (
        "failed",
        "503 Service Unavailable",
        0,
    )
    assert [a["trunk"] for a in call.events.get().detail["attempts"]] == ["trunk A", "trunk B"]
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_a_disabled_trunk_is_never_dialled(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path
) -> None:
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_answer_then_bye.xml", port=SIPP_PORTS[1])
    sip_number(tenant, f"127.0.0.1:{SIPP_PORTS[0]}", sipp.gateway)
    tenant.organization.sip_trunks.filter(name="trunk A").update(enabled=False)

    response = initiate(tenant)

    assert response.status_code == 200, response.json()
    call = wait_until_final(response.json()["call_id"])
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    assert [a["trunk"] for a in call.events.get(status="completed").detail["attempts"]] == [
        "trunk B"
    ]


def test_an_unanswered_call_is_cancelled_at_the_ring_time_out(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path, sip_settings
) -> None:
    sip_settings.CALL_RING_TIMEOUT_SECONDS = 2
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_ring_until_cancel.xml")
    sip_number(tenant, sipp.gateway)

    started = time.monotonic()
    response = initiate(tenant)

    assert response.status_code == 200, response.json()
    call = wait_until_final(response.json()["call_id"])
    assert 2 <= time.monotonic() - started < 5
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    assert f"CANCEL sip:{TO}@127.0.0.1:{SIPP_PORTS[0]} SIP/2.0" in verdict.messages
    assert (call.status, call.end_reason, call.cost_cents) == (
        "no-answer",
        "no answer within 2 s (CANCEL sent)",
        0,
    )
    assert timeline(call) == ["ringing", "no-answer"]
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_the_time_limit_ends_an_answered_call_with_bye(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path, monkeypatch
) -> None:
    # Assistants allow a minute at the least; holding for a 2-second call keeps the test short.
    hold = billing_services.balance_hold_call
    monkeypatch.setattr(
        "calls.services.balance_hold_call", lambda **kwargs: hold(**{**kwargs, "max_seconds": 2})
    )
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_answer_wait_bye.xml")
    sip_number(tenant, sipp.gateway)

    response = initiate(tenant)

    assert response.status_code == 200, response.json()
    call = wait_until_final(response.json()["call_id"])
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    assert "\nBYE sip:" in verdict.messages
    assert (call.status, call.end_reason, call.duration_seconds) == (
        "completed",
        "time limit of 2 s reached (BYE sent)",
        2,
    )
    assert call.time_limit_seconds == 2
    assert call.cost_cents == call.hold_cents == 1
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_with_no_agent_running_the_call_fails_with_a_503(tenant: Tenant, sip_settings) -> None:
    sip_number(tenant, f"127.0.0.1:{SIPP_PORTS[0]}")

    response = initiate(tenant)

    assert response.status_code == 503
    assert response.json() == {"detail": "No SIP agent is running to place the call."}
    call = Call.objects.get()
    assert (call.status, call.error, call.cost_cents) == (
        "failed",
        "No SIP agent is running to place the call.",
        0,
    )
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_a_fifth_call_on_a_full_agent_is_refused_at_once(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path, sip_settings
) -> None:
    sip_settings.CALL_RING_TIMEOUT_SECONDS = 3
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_ring_until_cancel.xml", calls=4)
    sip_number(tenant, sipp.gateway)
    ringing = [initiate(tenant) for _ in range(4)]
    assert [r.status_code for r in ringing] == [200] * 4

    started = time.monotonic()
    response = initiate(tenant)

    assert time.monotonic() - started < 1
    assert response.status_code == 503
    assert response.json() == {
        "detail": "Every SIP agent is carrying all the calls it can (4 per engine process); "
        "try again shortly."
    }
    refused = Call.objects.get(status="failed")
    assert refused.pk not in {r.json()["call_id"] for r in ringing}
    calls = [wait_until_final(r.json()["call_id"]) for r in ringing]
    assert {c.status for c in calls} == {"no-answer"}
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    assert len(sent_invites(verdict.messages)) == 4
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_a_full_agent_passes_the_call_to_the_next_agent(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path, sip_settings
) -> None:
    second_agent = AgentProcess(tmp_path / "agent2.log", control_port=AGENT_CONTROL_PORT + 1)
    try:
        sip_settings.SIP_AGENTS = [*sip_settings.SIP_AGENTS, "127.0.0.1:25071"]
        sip_settings.CALL_RING_TIMEOUT_SECONDS = 3
        sipp = start_sipp(sipp_cleanup, tmp_path, "uas_ring_until_cancel.xml", calls=5)
        sip_number(tenant, sipp.gateway)

        responses = [initiate(tenant) for _ in range(5)]

        assert [r.status_code for r in responses] == [200] * 5
        calls = [wait_until_final(r.json()["call_id"]) for r in responses]
        assert {c.status for c in calls} == {"no-answer"}
        verdict = sipp.verdict()
        assert (verdict.exit_code, verdict.errors) == (0, "")
        vias = [line for line in verdict.messages.splitlines() if line.startswith("Via: ")]
        assert any("127.0.0.1:25081" in via for via in vias)  # the second agent's SIP port
        assert_money_consistent(tenant.organization)
    finally:
        assert second_agent.stop() == 0


def test_sigterm_hangs_up_an_answered_call_and_records_it(
    tenant: Tenant, sip_settings, sipp_cleanup, tmp_path: Path
) -> None:
    agent = AgentProcess(tmp_path / "agent.log")
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_answer_wait_bye.xml")
    sip_number(tenant, sipp.gateway)
    response = initiate(tenant)
    assert response.status_code == 200, response.json()
    deadline = time.monotonic() + 10
    while Call.objects.get().status != "in-progress" and time.monotonic() < deadline:
        time.sleep(0.05)

    assert agent.stop() == 0

    call = Call.objects.get()
    assert (call.status, call.end_reason) == ("completed", "agent shut down (BYE sent)")
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_calls_of_an_agent_killed_mid_call_are_settled_at_the_time_they_talked(
    tenant: Tenant, sip_settings, sipp_cleanup, tmp_path: Path
) -> None:
    sip_settings.SIP_AGENT_SILENT_SECONDS = 1
    agent = AgentProcess(tmp_path / "agent.log")
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_answer_wait_bye.xml")
    sip_number(tenant, sipp.gateway)  # 600 s time limit: one hour's rule would charge 600 s
    response = initiate(tenant)
    assert response.status_code == 200, response.json()
    deadline = time.monotonic() + 10
    while Call.objects.get().status != "in-progress" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(3)  # talking, stamped every 0.2 s

    agent.kill()
    killed_at = timezone.now()
    time.sleep(1.5)  # past SIP_AGENT_SILENT_SECONDS: the next sweep finds it
    report = calls_sweep()

    assert report.settled == 1
    call = Call.objects.get()
    assert (call.status, call.settled_by) == ("completed", "agent")
    assert call.duration_seconds in (2, 3)  # answered to last heard, to the heartbeat
    assert killed_at - timedelta(seconds=0.5) <= call.ended_at <= killed_at
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_an_organization_without_an_enabled_trunk_gets_a_502(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path
) -> None:
    sip_number(tenant, f"127.0.0.1:{SIPP_PORTS[0]}")
    tenant.organization.sip_trunks.update(enabled=False)

    response = initiate(tenant)

    assert response.status_code == 502
    assert response.json() == {"detail": "The organization has no enabled SIP trunk."}
    call = Call.objects.get()
    assert (call.status, call.call_sid, call.cost_cents) == ("failed", "", 0)
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_the_demo_sip_number_places_a_real_call(
    transactional_db, agent, sipp_cleanup, tmp_path: Path
) -> None:
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_answer_then_bye.xml")
    out = io.StringIO()
    call_command("seed_demo", "--json", "--sip-gateway", sipp.gateway, stdout=out)
    demo = json.loads(out.getvalue())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {demo['api_key']}")

    response = client.post(
        "/calls/initiate",
        {"from_phone_number": demo["sip_phone_number"], "to_phone_number": TO},
        format="json",
    )

    assert response.status_code == 200, response.json()
    call = wait_until_final(response.json()["call_id"])
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    assert demo["sip_phone_number"] == "+15551234570"
    assert (call.status, call.provider, call.cost_cents) == ("completed", "sip", 1)
    assert call.welcome_message == "Hello, Acme calling over our own SIP trunk."
    assert_money_consistent(call.organization)


def test_a_trunk_that_registers_is_registered_with_digest_when_the_agent_starts(
    tenant: Tenant, sip_settings, sipp_cleanup, tmp_path: Path
) -> None:
    sipp = start_sipp(
        sipp_cleanup,
        tmp_path,
        "uas_register.xml",
        extra=("-inf", str(Path(__file__).parent / "sipp" / "trunk_credentials.csv")),
    )
    sip_number(tenant, sipp.gateway, username="alice", password="s3cret", registers=True)

    agent = AgentProcess(tmp_path / "agent.log")
    verdict = sipp.verdict()

    assert agent.stop() == 0
    assert (verdict.exit_code, verdict.errors) == (0, "")
    assert f"REGISTER sip:127.0.0.1:{SIPP_PORTS[0]} SIP/2.0" in verdict.messages
    assert 'Authorization: Digest username="alice", realm="trunk.test"' in verdict.messages
    assert "trunk A: REGISTER 200 OK" in agent.output()


def test_a_tcp_trunk_carries_the_call_over_tcp(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path
) -> None:
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_answer_then_bye.xml", extra=("-t", "t1"))
    sip_number(tenant, sipp.gateway, transport="tcp")

    response = initiate(tenant)

    assert response.status_code == 200, response.json()
    call = wait_until_final(response.json()["call_id"])
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    (invite,) = sent_invites(verdict.messages)
    assert invite.startswith(f"INVITE sip:{TO}@127.0.0.1:{SIPP_PORTS[0]};transport=tcp SIP/2.0")
    assert "\nVia: SIP/2.0/TCP 127.0.0.1:" in invite
    assert "TCP message received" in verdict.messages
    assert (call.status, call.end_reason) == ("completed", "callee hung up (BYE)")


def test_a_hang_up_request_cancels_a_ringing_call(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path
) -> None:
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_ring_until_cancel.xml")
    sip_number(tenant, sipp.gateway)
    call_id = initiate(tenant).json()["call_id"]
    deadline = time.monotonic() + 10
    while Call.objects.get().status != "ringing" and time.monotonic() < deadline:
        time.sleep(0.05)

    answer = sip_control.request(
        f"127.0.0.1:{AGENT_CONTROL_PORT}", {"op": "hangup", "call_id": call_id}, timeout=5
    )

    assert answer == {"ok": True}
    call = wait_until_final(call_id)
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    assert (call.status, call.end_reason, call.cost_cents) == (
        "canceled",
        "hung up on request (CANCEL sent)",
        0,
    )
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_a_silent_gateway_is_given_up_after_the_response_time_out(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path
) -> None:
    up = start_sipp(sipp_cleanup, tmp_path, "uas_answer_then_bye.xml", port=SIPP_PORTS[1])
    sip_number(tenant, "127.0.0.1:25190", up.gateway)  # nothing listens on 25190

    started = time.monotonic()
    response = initiate(tenant)

    assert response.status_code == 200, response.json()
    call = wait_until_final(response.json()["call_id"])
    assert 2.5 <= time.monotonic() - started < 6  # 1.5 s of silence, then a 1 s call
    verdict = up.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    attempts = call.events.get(status="completed").detail["attempts"]
    assert [(a["trunk"], a["sip_status"], a["sip_reason"]) for a in attempts] == [
        ("trunk A", 408, "No response within 1.5 s"),
        ("trunk B", 200, "Normal call clearing"),
    ]
    assert (call.status, call.call_sid) == ("completed", attempts[0]["sip_call_id"])


def test_a_gateway_that_sends_100_trying_is_waited_for(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path
) -> None:
    slow = start_sipp(sipp_cleanup, tmp_path, "uas_slow_trying.xml")
    sip_number(tenant, slow.gateway)

    response = initiate(tenant)

    assert response.status_code == 200, response.json()
    call = wait_until_final(response.json()["call_id"])
    verdict = slow.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    assert (call.status, call.end_reason) == ("completed", "callee hung up (BYE)")
    assert len(call.events.get(status="completed").detail["attempts"]) == 1


def test_a_silent_gateway_alone_fails_the_call(tenant: Tenant, agent) -> None:
    sip_number(tenant, "127.0.0.1:25190")

    response = initiate(tenant)

    assert response.status_code == 200, response.json()
    call = wait_until_final(response.json()["call_id"])
    assert (call.status, call.end_reason, call.cost_cents) == (
        "failed",
        "408 No response within 1.5 s",
        0,
    )
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_an_agent_with_another_secret_places_nothing(
    tenant: Tenant, agent, sip_settings, sipp_cleanup, tmp_path: Path
) -> None:
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_answer_then_bye.xml")
    sip_number(tenant, sipp.gateway)
    sip_settings.SIP_AGENT_SECRET = "not-the-agents-secret"

    response = initiate(tenant)

    assert response.status_code == 503
    assert response.json() == {"detail": "No SIP agent accepted this server's credentials."}
    assert Call.objects.get().status == "failed"
    sipp.kill()
    assert sent_invites(sipp.verdict().messages) == []
    assert_money_consistent(tenant.organization)


def test_sigterm_cancels_a_ringing_call_and_records_it(
    tenant: Tenant, sip_settings, sipp_cleanup, tmp_path: Path
) -> None:
    agent = AgentProcess(tmp_path / "agent.log")
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_ring_until_cancel.xml")
    sip_number(tenant, sipp.gateway)
    assert initiate(tenant).status_code == 200
    deadline = time.monotonic() + 10
    while Call.objects.get().status != "ringing" and time.monotonic() < deadline:
        time.sleep(0.05)

    assert agent.stop() == 0

    call = Call.objects.get()
    assert (call.status, call.end_reason, call.cost_cents) == (
        "canceled",
        "agent shut down (CANCEL sent)",
        0,
    )
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def crash_before_dialling(tenant: Tenant) -> Call:
    """The web worker dies after recording the call, before any agent heard of it."""
    with (
        mock.patch.object(SipProvider, "place_call", side_effect=SystemExit(1)),
        pytest.raises(SystemExit),
    ):
        initiate(tenant)
    Call.objects.update(created_at=timezone.now() - timedelta(minutes=3))
    return Call.objects.get()


def test_reconcile_asks_the_agents_and_fails_a_call_none_of_them_placed(
    tenant: Tenant, agent, capsys
) -> None:
    sip_number(tenant, f"127.0.0.1:{SIPP_PORTS[0]}")
    call = crash_before_dialling(tenant)

    call_command("reconcile_calls")

    assert capsys.readouterr().out == (
        "Reconciled queued calls: 1 failed, 0 adopted, 0 left for the next run.\n"
    )
    call.refresh_from_db()
    assert (call.status, call.cost_cents, call.error) == (
        "failed",
        0,
        "Never placed: the request stopped before BYO SIP trunk placed the call.",
    )
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_reconcile_waits_while_an_agent_cannot_be_asked(
    tenant: Tenant, sip_settings, capsys
) -> None:
    sip_number(tenant, f"127.0.0.1:{SIPP_PORTS[0]}")
    call = crash_before_dialling(tenant)

    call_command("reconcile_calls")

    assert capsys.readouterr().out == (
        "Reconciled queued calls: 0 failed, 0 adopted, 1 left for the next run.\n"
    )
    call.refresh_from_db()
    assert (call.status, call.cost_cents) == ("queued", None)
    assert held(tenant) == call.hold_cents


def test_an_agent_says_which_calls_it_is_placing(
    tenant: Tenant, agent, sipp_cleanup, tmp_path: Path
) -> None:
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_ring_until_cancel.xml")
    sip_number(tenant, sipp.gateway)
    response = initiate(tenant)
    deadline = time.monotonic() + 10
    while Call.objects.get().status != "ringing" and time.monotonic() < deadline:
        time.sleep(0.05)
    call = Call.objects.get()
    window = {"not_before": call.created_at, "not_after": call.created_at + timedelta(seconds=10)}
    query = PlacedCallQuery(call_id=str(call.pk), from_number=FROM, to_number=TO, **window)
    elsewhere = PlacedCallQuery(call_id=str(uuid.uuid4()), from_number=FROM, to_number=TO, **window)

    found = get_provider("sip").find_calls(query, Account())
    not_found = get_provider("sip").find_calls(elsewhere, Account())

    assert found == [StatusEvent(state="ringing", provider_call_id=response.json()["call_sid"])]
    assert not_found == []
    sip_control.request(
        f"127.0.0.1:{AGENT_CONTROL_PORT}", {"op": "hangup", "call_id": str(call.pk)}, timeout=5
    )
    assert wait_until_final(str(call.pk)).status == "canceled"
    assert sipp.verdict().exit_code == 0
