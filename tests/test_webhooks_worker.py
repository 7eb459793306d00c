"""Customer webhooks through a real Celery worker and its scheduler, to a real receiver that
fails first attempts and is down for a while: every event arrives, signed, in order per call."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import pytest
from django.test import override_settings
from standardwebhooks.webhooks import Webhook

from burki.models import Organization
from calls.models import Call
from tests.celery_worker import celery_worker, wait_for
from tests.conftest import assert_money_consistent, make_tenant
from tests.factories import PhoneNumberFactory
from tests.webhook_receiver import receiver
from webhooks.models import WebhookDelivery, WebhookEvent

pytestmark = pytest.mark.django_db(transaction=True)

FROM = "+15551234567"
CALLS = 100
WORKER = {
    "SANDBOX_TIME_SCALE": "20",  # a 15-60 s call plays in under 4 s
    "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
    "WEBHOOK_RELAY_INTERVAL_SECONDS": "0.5",
    "WEBHOOK_RETRY_SCHEDULE": "1,1,2,2,3,3,3,3,3,3,3,3",
}


def ended_calls(payloads: list[dict[str, Any]]) -> set[str]:
    return {p["data"]["call_id"] for p in payloads if p["type"] == "call.ended"}


def test_a_hundred_calls_reach_a_flaky_receiver_signed_in_order_with_nothing_lost(
    tmp_path,
) -> None:
    tenant = make_tenant(balance_cents=1_000_000)
    Organization.objects.filter(pk=tenant.organization.pk).update(max_concurrent_calls=CALLS)
    PhoneNumberFactory(organization=tenant.organization, number=FROM)
    seen: set[str] = set()

    def first_attempt_fails(received) -> int:
        if received.msg_id not in seen:
            seen.add(received.msg_id)
            return 500
        return 204

    with (
        receiver(behaviour=first_attempt_fails) as hooks,
        celery_worker(tmp_path, beat=True, **WORKER) as worker,
        override_settings(SANDBOX_TIME_SCALE=20, WEBHOOK_ALLOW_PRIVATE_TARGETS=True),
    ):
        created = tenant.client.post("/webhook-endpoints", {"url": hooks.url}, format="json")
        secret = created.json()["secret"]
        for i in range(CALLS):
            body = {
                "from_phone_number": FROM,
                "to_phone_number": f"+1555987{i:04d}",
                "metadata": {"row": i},
            }
            assert tenant.client.post("/calls/initiate", body, format="json").status_code == 200
            if i == CALLS // 2:
                hooks.stop()  # down for a while, mid-run
                down_at = time.monotonic()
        time.sleep(max(0.0, 4 - (time.monotonic() - down_at)))
        hooks.start()
        all_ended = wait_for(
            lambda: len(ended_calls(hooks.verified(secret))) == CALLS, timeout=120, interval=0.5
        )
        wait_for(
            lambda: not WebhookDelivery.objects.exclude(state="delivered").exists(), timeout=30
        )

    assert all_ended, worker.log[-3000:]
    payloads = hooks.verified(secret)  # every delivery verifies with the package's verifier
    assert all(Webhook(secret).verify(r.body, r.headers) for r in hooks.taken())
    by_id = {str(e.pk): e for e in WebhookEvent.objects.all()}
    taken_ids = [r.msg_id for r in hooks.taken()]
    assert set(taken_ids) == set(by_id), "an event was lost"
    # At least once: a repeat carries the id it had, and the body it had.
    bodies: dict[str, bytes] = {}
    for request in hooks.taken():
        assert bodies.setdefault(request.msg_id, request.body) == request.body
    # In order per call: the sequence numbers each call's events were first taken in.
    order: dict[str, list[int]] = defaultdict(list)
    for payload in payloads:
        numbers = order[payload["data"]["call_id"]]
        if payload["data"]["sequence"] not in numbers:
            numbers.append(payload["data"]["sequence"])
    for call in Call.objects.all():
        expected = sorted(e.sequence for e in by_id.values() if e.subject_id == call.pk)
        assert order[str(call.pk)] == expected
        assert call.is_final and call.cost_cents is not None
    ends = [p for p in payloads if p["type"] == "call.ended"]
    assert {p["data"]["metadata"]["row"] for p in ends} == set(range(CALLS))
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"delivered"}
    assert_money_consistent(tenant.organization)


def test_a_worker_killed_mid_delivery_leaves_it_to_the_next_worker(tmp_path) -> None:
    tenant = make_tenant()
    PhoneNumberFactory(organization=tenant.organization, number=FROM)
    stalled = {"first": True}

    def stall_once(received) -> int | str:
        if stalled["first"]:
            stalled["first"] = False
            return "stall"  # the worker is killed while it waits for this answer
        return 200

    settings = {**WORKER, "WEBHOOK_LEASE_SECONDS": "3"}
    with (
        receiver(behaviour=stall_once) as hooks,
        override_settings(SANDBOX_TIME_SCALE=20, WEBHOOK_ALLOW_PRIVATE_TARGETS=True),
    ):
        created = tenant.client.post(
            "/webhook-endpoints", {"url": hooks.url, "events": ["call.ended"]}, format="json"
        )
        secret = created.json()["secret"]
        (tmp_path / "first").mkdir()
        with celery_worker(tmp_path / "first", beat=True, **settings) as first:
            body = {"from_phone_number": FROM, "to_phone_number": "+15559876543"}
            assert tenant.client.post("/calls/initiate", body, format="json").status_code == 200
            assert wait_for(lambda: hooks.requests, timeout=30), first.log[-3000:]
            first.kill()  # mid-delivery, without a word
        (tmp_path / "second").mkdir()
        with celery_worker(tmp_path / "second", beat=True, **settings) as second:
            delivered = wait_for(lambda: hooks.taken(), timeout=30)

    assert delivered, second.log[-3000:]
    (taken,) = hooks.taken()
    assert taken.msg_id == hooks.requests[0].msg_id  # the same event, the same webhook-id
    assert Webhook(secret).verify(taken.body, taken.headers)["type"] == "call.ended"
    delivery = WebhookDelivery.objects.get()
    assert (delivery.state, delivery.attempts) == ("delivered", 1)
