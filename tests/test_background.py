"""The background engine with a real worker process on Redis: what must happen happens without
anyone asking for it."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from calls import tasks
from calls.models import Call
from telephony.providers.sandbox import SandboxProvider
from tests.celery_worker import celery_worker, wait_for
from tests.conftest import assert_money_consistent, make_tenant
from tests.factories import PhoneNumberFactory

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"from_phone_number": "+15551234567", "to_phone_number": "+15559876543"}


def test_the_schedule_reconciles_and_sweeps_every_minute() -> None:
    schedule = settings.CELERY_BEAT_SCHEDULE

    assert {name: (entry["task"], entry["schedule"]) for name, entry in schedule.items()} == {
        "reconcile-queued-calls": ("calls.tasks.calls_reconcile", 60),
        "sweep-overdue-calls": ("calls.tasks.calls_sweep", 60),
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
