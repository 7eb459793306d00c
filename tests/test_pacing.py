"""Calls a second: the shared pace (burki.pacing) and the provider account's limit on
POST /calls/initiate (wait up to CALL_PACING_MAX_WAIT_SECONDS, then 429)."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from decimal import Decimal

import pytest
import responses
from django.test import override_settings

from billing.models import Balance
from burki.pacing import Pace, pace_reserve, paces_reset
from calls.models import Call
from telephony.models import ProviderAccount
from tests.conftest import Tenant
from tests.factories import PhoneNumberFactory
from tests.test_twilio import CALLS_URL, twilio_created

REDIS_CACHE = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/12",
        "KEY_PREFIX": "test-pacing",
    }
}


@pytest.fixture(autouse=True)
def fresh_paces():
    paces_reset()
    yield
    paces_reset()


def test_the_carriers_defaults_pace_an_account_without_its_own_figure() -> None:
    def rate(provider: str, own: Decimal | None = None) -> Decimal | None:
        return ProviderAccount(provider=provider, calls_per_second=own).effective_calls_per_second

    assert (rate("twilio"), rate("vonage"), rate("telnyx")) == (1, 3, 20)
    assert rate("sandbox") is None and rate("sip") is None
    assert rate("twilio", Decimal("5.5")) == Decimal("5.5")


def test_slots_are_spaced_by_the_rate_and_a_far_one_is_refused_without_taking_it() -> None:
    pace = Pace(key=f"test:{uuid.uuid4()}", calls_per_second=Decimal(4))

    first = pace_reserve([pace], max_wait=1)
    second = pace_reserve([pace], max_wait=1)
    refused = pace_reserve([pace], max_wait=0.1)
    third = pace_reserve([pace], max_wait=1)

    assert first.granted and first.wait_seconds == 0
    assert second.granted and second.wait_seconds == pytest.approx(0.25, abs=0.02)
    assert not refused.granted and refused.wait_seconds == pytest.approx(0.5, abs=0.02)
    assert third.granted and third.wait_seconds == pytest.approx(0.5, abs=0.02)


def test_two_paces_reserve_the_slot_both_have_free() -> None:
    slow = Pace(key=f"slow:{uuid.uuid4()}", calls_per_second=Decimal(1))
    fast = Pace(key=f"fast:{uuid.uuid4()}", calls_per_second=Decimal(10))

    pace_reserve([slow, fast], max_wait=5)
    both = pace_reserve([slow, fast], max_wait=5)
    fast_alone = pace_reserve([fast], max_wait=5)

    assert both.wait_seconds == pytest.approx(1.0, abs=0.02)  # the slow one decides
    # The fast pace's slot after the shared one: 1 s + 0.1 s.
    assert fast_alone.wait_seconds == pytest.approx(1.1, abs=0.02)


@override_settings(CACHES=REDIS_CACHE)
def test_in_redis_the_slots_of_concurrent_reservers_never_exceed_the_rate() -> None:
    pace = Pace(key=f"redis:{uuid.uuid4()}", calls_per_second=Decimal(20))
    waits: list[float] = []
    lock = threading.Lock()

    def reserve() -> None:
        for _ in range(10):
            reservation = pace_reserve([pace], max_wait=10)
            assert reservation.granted
            with lock:
                waits.append(time.monotonic() + reservation.wait_seconds)

    threads = [threading.Thread(target=reserve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    slots = sorted(waits)
    gaps = [later - earlier for earlier, later in itertools.pairwise(slots)]
    assert len(slots) == 40
    # 40 slots at 20 a second: 1.95 s from the first to the last, none closer than 50 ms (less
    # the jitter of the threads' own clocks reading the answer).
    assert slots[-1] - slots[0] == pytest.approx(1.95, abs=0.05)
    assert min(gaps) > 0.03


@pytest.fixture
def paced_number(tenant: Tenant):
    number = PhoneNumberFactory(organization=tenant.organization, twilio=True)
    number.provider_account.calls_per_second = Decimal(1)
    number.provider_account.save()
    return number


def initiate(tenant: Tenant, number) -> object:
    return tenant.client.post(
        "/calls/initiate",
        {"from_phone_number": str(number.number), "to_phone_number": "+15559876543"},
        format="json",
    )


@override_settings(CALL_PACING_MAX_WAIT_SECONDS=0.3)
def test_initiate_beyond_the_accounts_rate_is_a_429_that_dials_and_holds_nothing(
    tenant: Tenant, paced_number
) -> None:
    with responses.RequestsMock() as twilio:
        twilio.post(CALLS_URL, json=twilio_created(), status=201)
        first = initiate(tenant, paced_number)
        second = initiate(tenant, paced_number)
        assert len(twilio.calls) == 1

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json() == {
        "detail": "Too many calls a second through this number's provider account: its limit "
        "is 1 a second. Try again shortly."
    }
    assert second.headers["Retry-After"] == "1"
    assert Call.objects.count() == 1
    balance = Balance.objects.get(organization=tenant.organization)
    assert balance.open_holds == 1


@override_settings(CALL_PACING_MAX_WAIT_SECONDS=1.5)
def test_initiate_within_the_bound_waits_for_its_slot_and_is_placed(
    tenant: Tenant, paced_number
) -> None:
    with responses.RequestsMock() as twilio:
        twilio.post(CALLS_URL, json=twilio_created(), status=201)
        twilio.post(CALLS_URL, json=twilio_created("CA" + "f" * 32), status=201)
        started = time.monotonic()
        first = initiate(tenant, paced_number)
        second = initiate(tenant, paced_number)
        took = time.monotonic() - started

    assert (first.status_code, second.status_code) == (200, 200)
    assert took >= 0.95  # the second waited for the slot a second after the first
    assert Call.objects.filter(status="initiated").count() == 2


def test_a_sandbox_number_is_not_paced(tenant: Tenant) -> None:
    number = PhoneNumberFactory(organization=tenant.organization)

    answers = [initiate(tenant, number).status_code for _ in range(5)]

    assert answers == [200] * 5
