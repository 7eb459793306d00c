"""The background engine with a real worker process on Redis: what must happen happens without
anyone asking for it."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from unittest import mock

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from calls import tasks
from calls.models import Call
from telephony.providers.sandbox import SandboxProvider
from tests.celery_worker import ROOT, celery_worker, wait_for
from tests.conftest import assert_money_consistent, make_tenant
from tests.factories import PhoneNumberFactory
from tests.test_twilio import signed_post

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"from_phone_number": "+15551234567", "to_phone_number": "+15559876543"}


def test_the_schedule_reconciles_and_sweeps_every_minute_and_relays_webhooks_every_second() -> None:
    schedule = settings.CELERY_BEAT_SCHEDULE

    assert {name: (entry["task"], entry["schedule"]) for name, entry in schedule.items()} == {
        "campaigns-tick": ("campaigns.tasks.campaigns_tick", 1.0),
        "reconcile-queued-calls": ("calls.tasks.calls_reconcile", 60),
        "sweep-overdue-calls": ("calls.tasks.calls_sweep", 60),
        "relay-webhooks": ("webhooks.tasks.webhooks_relay", 1.0),
        "purge-webhook-events": ("webhooks.tasks.webhooks_purge", 3600),
    }


def test_a_call_a_dead_request_left_queued_is_settled_by_the_scheduler_alone(tmp_path) -> None:
    tenant = make_tenant()
    PhoneNumberFactory(organization=tenant.organization, number=BODY["from_phone_number"])
    crash = mock.patch.object(SandboxProvider, "place_call", side_effect=KeyboardInterrupt)
    with crash, pytest.raises(KeyboardInterrupt):
        tenant.client.post("/calls/initiate", BODY, format="json")
    Call.objects.update(created_at=timezone.now() - timedelta(minutes=5))
    assert Call.objects.get().status == "queued"

    with celery_worker(tmp_path, beat=True, CALL_RECONCILE_INTERVAL_SECONDS="1") as worker:
        settled = wait_for(lambda: Call.objects.get().status == "failed", timeout=30)

    assert settled, worker.log
    call = Call.objects.get()
    assert call.error == "Never placed: the request stopped before Sandbox placed the call."
    assert call.cost_cents == 0
    assert_money_consistent(tenant.organization)
    assert "calls.tasks.calls_reconcile" in worker.log


def test_a_sandbox_call_plays_out_on_the_worker_with_nobody_reading_it(tmp_path) -> None:
    tenant = make_tenant()
    PhoneNumberFactory(organization=tenant.organization, number=BODY["from_phone_number"])
    scale = {"SANDBOX_TIME_SCALE": "20"}  # a 15-60 s call plays in under 4 s

    with celery_worker(tmp_path, **scale) as worker, override_settings(SANDBOX_TIME_SCALE=20):
        response = tenant.client.post("/calls/initiate", BODY, format="json")
        assert response.status_code == 200
        ended = wait_for(lambda: Call.objects.get().status == "completed", timeout=20)

    assert ended, worker.log
    call = Call.objects.get()
    talk = SandboxProvider.talk_seconds(call.call_sid, call.time_limit_seconds)
    assert call.duration_seconds == talk
    assert call.ended_at - call.answered_at == timedelta(seconds=talk)
    assert [e.status for e in call.events.all()] == ["ringing", "in-progress", "completed"]
    listed = tenant.client.get("/calls?status=completed").json()["results"]
    assert [c["call_id"] for c in listed] == [str(call.pk)]
    assert_money_consistent(tenant.organization)


def test_a_sandbox_machine_gets_its_message_after_the_beep_on_the_worker(tmp_path) -> None:
    tenant = make_tenant()
    PhoneNumberFactory(organization=tenant.organization, number=BODY["from_phone_number"])
    body = {
        **BODY,
        "to_phone_number": "+15559870009",  # answered by a machine
        "voicemail": {"on_machine": "leave_message", "message": "Please call Acme back."},
    }
    scale = {"SANDBOX_TIME_SCALE": "20"}

    with celery_worker(tmp_path, **scale) as worker, override_settings(SANDBOX_TIME_SCALE=20):
        response = tenant.client.post("/calls/initiate", body, format="json")
        assert response.status_code == 200
        ended = wait_for(lambda: Call.objects.get().status == "completed", timeout=20)

    assert ended, worker.log
    call = Call.objects.get()
    assert (call.answered_by, call.settled_by) == ("machine", "provider")
    assert call.end_reason == (
        "Answered by a machine: the voicemail message was left after the beep."
    )
    # Said from the beep (8 s after the answer, on the call's clock) for 2 s: about 10 s, the
    # worker's own delay adding a little; far less than the machine's 40 s of recording.
    assert 10 <= call.duration_seconds <= 15
    actions = [e.detail.get("action") for e in call.events.all()]
    assert actions == [
        None,
        None,
        "waiting for the end of the machine's greeting",
        "the greeting ended: leaving the message",
        None,
    ]
    assert_money_consistent(tenant.organization)


def test_the_sweep_settles_a_call_whose_end_never_came_with_nobody_asking(tmp_path) -> None:
    tenant = make_tenant()
    PhoneNumberFactory(organization=tenant.organization, number=BODY["from_phone_number"])
    with mock.patch.object(tasks.call_play_simulated, "apply_async"):  # the broker lost them
        assert tenant.client.post("/calls/initiate", BODY, format="json").status_code == 200
    long_ago = timezone.now() - timedelta(minutes=15)
    Call.objects.update(initiated_at=long_ago, live_until=long_ago + timedelta(minutes=10))
    assert Call.objects.get().status == "initiated"

    with celery_worker(tmp_path, beat=True, CALL_SWEEP_INTERVAL_SECONDS="1") as worker:
        settled = wait_for(lambda: Call.objects.get().status == "completed", timeout=30)

    assert settled, worker.log
    call = Call.objects.get()
    assert call.settled_by == "provider"
    assert call.duration_seconds == SandboxProvider.talk_seconds(
        call.call_sid, call.time_limit_seconds
    )
    assert_money_consistent(tenant.organization)
    assert "calls.tasks.calls_sweep" in worker.log


@pytest.fixture
def fake_twilio() -> Iterator[str]:
    """bench/fake_twilio.py on a free loopback port: every call it places talks for 125 s."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(  # noqa: S603
        [sys.executable, str(ROOT / "bench" / "fake_twilio.py"), str(port), "--talk", "125"]
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _listening(port), timeout=10), "the fake Twilio did not start"
        yield base_url
    finally:
        server.terminate()
        server.wait(timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_twilio_end_is_settled_by_the_worker_on_twilios_own_record(
    tmp_path, fake_twilio: str
) -> None:
    """The webhook says "completed, 0 s" (the organization could have signed it itself); the
    worker fetches the call from Twilio's API and bills the 125 s it really talked."""
    tenant = make_tenant()
    PhoneNumberFactory(
        organization=tenant.organization, number=BODY["from_phone_number"], twilio=True
    )
    url = {"TWILIO_API_BASE_URL": fake_twilio}

    with celery_worker(tmp_path, **url) as worker, override_settings(**url):
        placed = tenant.client.post("/calls/initiate", BODY, format="json")
        assert placed.status_code == 200, placed.json()
        call = Call.objects.get()
        ended = {"CallSid": call.call_sid, "CallStatus": "completed", "CallDuration": "0"}
        path = f"/webhooks/calls/{call.pk}/status"
        assert signed_post(tenant.client, path, ended).json() == {"detail": "Applied."}
        settled = wait_for(
            lambda: Call.objects.filter(cost_cents__isnull=False).exists(), timeout=20
        )

    assert settled, worker.log
    call.refresh_from_db()
    assert (call.status, call.duration_seconds, call.cost_cents) == ("completed", 125, 21)
    assert call.settled_by == "provider"
    assert_money_consistent(tenant.organization)
