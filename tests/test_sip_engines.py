"""`sip_agent --processes N`: N SIP engines behind one control address and one supervisor."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from telephony.sip import control, protocol
from tests import test_sip_calls
from tests.conftest import Tenant, assert_money_consistent
from tests.sip_harness import AGENT_CONTROL_PORT, AGENT_SIP_PORT, AgentProcess, sent_invites
from tests.test_sip_calls import held, initiate, sip_number, start_sipp, wait_until_final

pytestmark = pytest.mark.django_db(transaction=True)

sip_settings = test_sip_calls.sip_settings
tenant = test_sip_calls.tenant
sipp_cleanup = test_sip_calls.sipp_cleanup

CONTROL = f"127.0.0.1:{AGENT_CONTROL_PORT}"


@pytest.fixture
def two_engines(sip_settings, tmp_path: Path):
    process = AgentProcess(tmp_path / "agent.log", extra=("--processes", "2"))
    yield process
    code = process.stop()
    assert code == 0, process.output()
    assert "Traceback" not in process.output(), process.output()
    assert engines_of(process) == []  # the supervisor took its engines down with it


def engines_of(agent: AgentProcess) -> list[int]:
    path = Path(f"/proc/{agent.process.pid}/task/{agent.process.pid}/children")
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


def load() -> protocol.Reply:
    return control.ask(CONTROL, protocol.Status(), timeout=5)


def test_two_engines_carry_six_ringing_calls_on_one_address(
    tenant: Tenant, two_engines, sipp_cleanup, tmp_path: Path, sip_settings
) -> None:
    sip_settings.CALL_RING_TIMEOUT_SECONDS = 3
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_ring_until_cancel.xml", calls=6)
    sip_number(tenant, sipp.gateway)
    assert load() == protocol.Load(calls=0, capacity=8)

    responses = [initiate(tenant) for _ in range(6)]

    assert [r.status_code for r in responses] == [200] * 6
    assert load() == protocol.Load(calls=6, capacity=8)
    calls = [wait_until_final(r.json()["call_id"]) for r in responses]
    assert {c.status for c in calls} == {"no-answer"}
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    invites = sent_invites(verdict.messages)
    vias = [line for invite in invites for line in invite.splitlines() if line.startswith("Via:")]
    # The calls were spread: three INVITEs from each engine's SIP port.
    for port in (AGENT_SIP_PORT, AGENT_SIP_PORT + 1):
        assert sum(f"127.0.0.1:{port};" in via for via in vias) == 3, vias
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_the_agent_is_full_only_when_every_engine_is(
    tenant: Tenant, two_engines, sipp_cleanup, tmp_path: Path, sip_settings
) -> None:
    sip_settings.CALL_RING_TIMEOUT_SECONDS = 3
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_ring_until_cancel.xml", calls=8)
    sip_number(tenant, sipp.gateway)
    placed = [initiate(tenant) for _ in range(8)]

    refused = initiate(tenant)

    assert [r.status_code for r in placed] == [200] * 8
    assert refused.status_code == 503
    assert refused.json() == {
        "detail": "Every SIP agent is carrying all the calls it can (4 per engine process); "
        "try again shortly."
    }
    calls = [wait_until_final(r.json()["call_id"]) for r in placed]
    assert {c.status for c in calls} == {"no-answer"}
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    assert len(sent_invites(verdict.messages)) == 8
    assert held(tenant) == 0
    assert_money_consistent(tenant.organization)


def test_a_killed_engine_is_started_again_and_takes_calls(
    tenant: Tenant, two_engines, sipp_cleanup, tmp_path: Path
) -> None:
    first = engines_of(two_engines)
    assert len(first) == 2

    os.kill(first[0], signal.SIGKILL)

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = engines_of(two_engines)
        if len(now) == 2 and first[0] not in now and load() == protocol.Load(0, 8):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"engines now {engines_of(two_engines)}, were {first}")
    assert first[1] in engines_of(two_engines)
    assert "sip engine 0 died (exit code -9); starting it again" in two_engines.output()
    sipp = start_sipp(sipp_cleanup, tmp_path, "uas_answer_then_bye.xml", calls=2)
    sip_number(tenant, sipp.gateway)

    calls = [initiate(tenant) for _ in range(2)]

    assert [r.status_code for r in calls] == [200] * 2
    ended = [wait_until_final(r.json()["call_id"]) for r in calls]
    assert [c.status for c in ended] == ["completed"] * 2
    verdict = sipp.verdict()
    assert (verdict.exit_code, verdict.errors) == (0, "")
    assert_money_consistent(tenant.organization)
