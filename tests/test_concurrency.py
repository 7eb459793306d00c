"""Money under concurrency, on PostgreSQL: real threads, each with its own database connection,
all released at once by a barrier."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import responses
from django.db import connections
from django.test import Client
from rest_framework.test import APIClient

from billing.models import Balance, LedgerEntry
from calls.models import Call, IdempotencyKey
from calls.services import call_settle_from_record
from tests.conftest import Tenant, assert_money_consistent, make_tenant
from tests.factories import AssistantFactory, PhoneNumberFactory
from tests.test_twilio import CALL_SID, CALLS_URL, signed_post, twilio_created

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"from_phone_number": "+15551234567", "to_phone_number": "+15559876543"}
INSUFFICIENT = {"detail": "Insufficient balance. Please add funds to continue making calls."}


def all_at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` in `count` threads that start together; each closes its connection."""
    barrier = threading.Barrier(count)

    def run(i: int) -> Any:
        try:
            barrier.wait()
            return work(i)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def api_client(tenant: Tenant) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant.api_key}")
    return client


class BalanceWatcher(threading.Thread):
    """Reads the balance over and over while the race runs: held never exceeds the balance."""

    def __init__(self, organization_id: int) -> None:
        super().__init__()
        self.organization_id = organization_id
        self.stop = threading.Event()
        self.readings: list[tuple[int, int]] = []

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                balance = Balance.objects.get(organization_id=self.organization_id)
                self.readings.append((balance.balance_cents, balance.held_cents))
                time.sleep(0.002)
        finally:
            connections.close_all()


def test_fifty_initiations_against_money_for_ten_place_exactly_ten() -> None:
    # 60 s at 10 cents a minute holds 10 cents: 100 cents pays for exactly 10 calls.
    tenant = make_tenant(balance_cents=100)
    tenant.organization.max_concurrent_calls = 1000
    tenant.organization.save()
    assistant = AssistantFactory(organization=tenant.organization, max_call_duration_seconds=60)
    PhoneNumberFactory(
        organization=tenant.organization, number=BODY["from_phone_number"], assistant=assistant
    )
    watcher = BalanceWatcher(tenant.organization.pk)
    watcher.start()

    def initiate(i: int) -> tuple[int, dict]:
        response = api_client(tenant).post(
            "/calls/initiate", {**BODY, "to_phone_number": f"+1555987{i:04d}"}, format="json"
        )
        return response.status_code, response.json()

    try:
        results = all_at_once(50, initiate)
    finally:
        watcher.stop.set()
        watcher.join()

    assert Counter(status for status, _ in results) == {200: 10, 402: 40}
    assert all(body == INSUFFICIENT for status, body in results if status == 402)
    placed = {body["call_id"] for status, body in results if status == 200}
    assert set(map(str, Call.objects.values_list("pk", flat=True))) == placed
    assert all(call.hold_cents == 10 for call in Call.objects.all())
    balance = Balance.objects.get(organization=tenant.organization)
    assert (balance.balance_cents, balance.held_cents) == (100, 100)
    assert LedgerEntry.objects.filter(kind="hold").count() == 10
    assert watcher.readings
    assert all(0 <= held <= total for total, held in watcher.readings)
    assert_money_consistent(tenant.organization)


def test_a_burst_never_exceeds_the_cap_on_simultaneous_calls() -> None:
    tenant = make_tenant(balance_cents=100_000)
    tenant.organization.max_concurrent_calls = 5
    tenant.organization.save()
    PhoneNumberFactory(organization=tenant.organization, number=BODY["from_phone_number"])

    statuses = all_at_once(
        20,
        lambda i: (
            api_client(tenant)
            .post("/calls/initiate", {**BODY, "to_phone_number": f"+1555987{i:04d}"}, format="json")
            .status_code
        ),
    )

    assert Counter(statuses) == {200: 5, 429: 15}
    assert Call.objects.count() == 5
    assert Balance.objects.get(organization=tenant.organization).held_cents == 5 * 100
    assert_money_consistent(tenant.organization)


def test_twenty_copies_of_the_final_webhook_charge_once() -> None:
    tenant = make_tenant()
    PhoneNumberFactory(
        organization=tenant.organization, number=BODY["from_phone_number"], twilio=True
    )
    with responses.RequestsMock() as mock:
        mock.post(CALLS_URL, json=twilio_created(), status=201)
        call_id = api_client(tenant).post("/calls/initiate", BODY, format="json").json()["call_id"]
    completed = {"CallSid": CALL_SID, "CallStatus": "completed", "CallDuration": "125"}

    answers = all_at_once(
        20,
        lambda i: signed_post(Client(), f"/webhooks/calls/{call_id}/status", completed).json(),
    )

    assert Counter(answer["detail"] for answer in answers) == {
        "Applied.": 1,
        "Ignored: already applied.": 19,
    }
    # And twenty workers settling it on Twilio's record at once (a task delivered again, a
    # sweep beside it).
    record = {"sid": CALL_SID, "status": "completed", "duration": "125"}
    with responses.RequestsMock() as mock:
        mock.get(CALLS_URL.replace(".json", f"/{CALL_SID}.json"), json=record)
        settled = all_at_once(20, lambda i: call_settle_from_record(call_id=uuid.UUID(call_id)))
    assert settled == [True] * 20  # every one finds it settled, by itself or another
    entries = LedgerEntry.objects.filter(call_id=call_id).order_by("id")
    assert [(e.kind, e.amount_cents, e.held_change_cents) for e in entries] == [
        ("hold", 0, 100),
        ("charge", -21, -21),
        ("release", 0, -79),
    ]
    balance = Balance.objects.get(organization=tenant.organization)
    assert (balance.balance_cents, balance.held_cents) == (10_000 - 21, 0)
    assert Call.objects.get(pk=call_id).cost_cents == 21
    assert_money_consistent(tenant.organization)


def test_twenty_parallel_retries_with_one_key_reach_the_provider_once() -> None:
    tenant = make_tenant()
    PhoneNumberFactory(
        organization=tenant.organization, number=BODY["from_phone_number"], twilio=True
    )

    def slow_twilio(request: Any) -> tuple[int, dict, str]:
        time.sleep(0.3)  # keep the first request in flight while the others arrive
        import json

        return 201, {}, json.dumps(twilio_created())

    def retry(i: int) -> tuple[int, dict, bool]:
        response = api_client(tenant).post(
            "/calls/initiate", BODY, format="json", HTTP_IDEMPOTENCY_KEY="order-42"
        )
        return response.status_code, response.json(), response.has_header("Idempotent-Replayed")

    with responses.RequestsMock() as mock:
        mock.add_callback(responses.POST, CALLS_URL, callback=slow_twilio)
        results = all_at_once(20, retry)
        provider_requests = len(mock.calls)
        after = api_client(tenant).post(
            "/calls/initiate", BODY, format="json", HTTP_IDEMPOTENCY_KEY="order-42"
        )

    assert provider_requests == 1
    call = Call.objects.get()
    expected = {
        "message": "Call initiated successfully",
        "call_sid": CALL_SID,
        "call_id": str(call.pk),
    }
    assert {status for status, _, _ in results} <= {200, 409}
    assert [replayed for status, _, replayed in results if status == 200].count(False) == 1
    assert all(body == expected for status, body, _ in results if status == 200)
    assert (after.status_code, after.json(), after["Idempotent-Replayed"]) == (
        200,
        expected,
        "true",
    )
    assert IdempotencyKey.objects.get().call == call
    assert_money_consistent(tenant.organization)
