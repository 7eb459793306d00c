"""The cap on simultaneous calls per organization, and throttling per API key."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from asgiref.local import Local
from django.conf import settings
from django.core.cache import caches
from django.db import connection, connections
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import Balance, LedgerEntry
from burki.models import ApiKey
from burki.services import api_key_create
from burki.throttling import OUTAGE_RETRY_SECONDS, outages
from calls import services
from calls.models import Call
from calls.services import call_apply_event
from telephony.providers.base import StatusEvent
from telephony.providers.sandbox import SandboxProvider
from tests.conftest import Tenant, assert_money_consistent, make_tenant
from tests.factories import PhoneNumberFactory
from tests.test_concurrency import all_at_once

URL = "/calls/initiate"
BODY = {"from_phone_number": "+15551234567", "to_phone_number": "+15559876543"}
REDIS_URL = "redis://127.0.0.1:6379/15"
LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def number(tenant: Tenant):
    return PhoneNumberFactory(organization=tenant.organization, number="+15551234567")


def initiate(tenant: Tenant):
    return tenant.client.post(URL, BODY, format="json")


def throttle_rates(api_key: str = "1000/min", initiate: str = "1000/min"):
    return override_settings(
        REST_FRAMEWORK={
            "DEFAULT_AUTHENTICATION_CLASSES": ["burki.authentication.ApiKeyAuthentication"],
            "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
            "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
            "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
            "EXCEPTION_HANDLER": "burki.exceptions.api_exception_handler",
            "UNAUTHENTICATED_USER": None,
            "DEFAULT_THROTTLE_CLASSES": ["burki.throttling.ApiKeyRateThrottle"],
            "DEFAULT_THROTTLE_RATES": {"api_key": api_key, "initiate": initiate},
        }
    )


class TestConcurrentCallCap:
    def test_the_call_over_the_cap_is_a_429_that_holds_nothing(self, tenant: Tenant, number):
        tenant.organization.max_concurrent_calls = 2
        tenant.organization.save()

        statuses = [initiate(tenant).status_code for _ in range(3)]
        refused = initiate(tenant)

        assert statuses == [200, 200, 429]
        assert refused.status_code == 429
        assert refused.json() == {
            "detail": "Too many simultaneous calls: your organization's limit is 2. "
            "Try again when a call has ended."
        }
        assert refused["Retry-After"] == "5"
        assert Call.objects.count() == 2
        assert LedgerEntry.objects.filter(kind="hold").count() == 2
        assert Balance.objects.get(organization=tenant.organization).held_cents == 200
        assert_money_consistent(tenant.organization)

    @override_settings(MAX_CONCURRENT_CALLS=1)
    def test_the_default_comes_from_settings(self, tenant: Tenant, number) -> None:
        assert [initiate(tenant).status_code for _ in range(2)] == [200, 429]

    @override_settings(MAX_CONCURRENT_CALLS=1)
    def test_a_finished_call_frees_its_slot(self, tenant: Tenant, number) -> None:
        call = Call.objects.get(pk=initiate(tenant).json()["call_id"])
        call_apply_event(
            call=call,
            event=StatusEvent(state="completed", duration_seconds=30),
            source="test",
        )

        assert initiate(tenant).status_code == 200

    @override_settings(MAX_CONCURRENT_CALLS=1)
    def test_a_call_past_its_time_limit_no_longer_counts(self, tenant: Tenant, number) -> None:
        call = Call.objects.get(pk=initiate(tenant).json()["call_id"])
        # Its final webhook never came, but the provider ended it at its time limit.
        ring_and_slack = timedelta(seconds=settings.CALL_RING_TIMEOUT_SECONDS + 60)
        placed = timezone.now() - timedelta(seconds=call.time_limit_seconds) - ring_and_slack
        Call.objects.filter(pk=call.pk).update(
            created_at=placed,
            live_until=placed + timedelta(seconds=call.time_limit_seconds) + ring_and_slack,
        )

        assert initiate(tenant).status_code == 200

    def test_each_organization_has_its_own_cap(
        self, tenant: Tenant, outsider: Tenant, number
    ) -> None:
        tenant.organization.max_concurrent_calls = 1
        tenant.organization.save()
        PhoneNumberFactory(organization=outsider.organization, number="+15557654321")
        initiate(tenant)

        response = outsider.client.post(
            URL, {**BODY, "from_phone_number": "+15557654321"}, format="json"
        )

        assert response.status_code == 200


class TestThrottling:
    def test_requests_over_the_rate_are_a_429_with_retry_after(self, tenant: Tenant) -> None:
        with throttle_rates(api_key="3/min"):
            statuses = [tenant.client.get("/calls").status_code for _ in range(3)]
            throttled = tenant.client.get("/calls")

        assert statuses == [200, 200, 200]
        assert throttled.status_code == 429
        assert throttled.json() == {
            "detail": "Request was throttled. Expected available in 60 seconds."
        }
        assert throttled["Retry-After"] == "60"

    def test_the_limit_is_per_api_key(self, tenant: Tenant) -> None:
        _, second_key = api_key_create(organization=tenant.organization, name="second")
        with throttle_rates(api_key="1/min"):
            tenant.client.get("/calls")
            first = tenant.client.get("/calls")
            tenant.client.credentials(HTTP_AUTHORIZATION=f"Bearer {second_key}")
            second = tenant.client.get("/calls")

        assert (first.status_code, second.status_code) == (429, 200)

    def test_placing_calls_has_its_own_tighter_rate(self, tenant: Tenant, number) -> None:
        with throttle_rates(initiate="2/min"):
            statuses = [initiate(tenant).status_code for _ in range(3)]
            listing = tenant.client.get("/calls")

        assert statuses == [200, 200, 429]
        assert listing.status_code == 200
        assert Call.objects.count() == 2
        assert_money_consistent(tenant.organization)

    @pytest.mark.parametrize(
        "body",
        [
            '{"from_phone_number": ',  # not JSON
            '{"from_phone_number": 5, "to_phone_number": "+1"}',  # wrong types
            '{"from_phone_number": "+15557654321", "to_phone_number": "+15559876543"}',  # a 403
            '{"from_phone_number": "+15551234567", "to_phone_number": "+15559876543"}',  # a call
        ],
    )
    def test_a_key_over_its_rate_is_refused_before_its_body_is_read(
        self, tenant: Tenant, number, django_assert_num_queries, body: str
    ) -> None:
        """Throttles come right after authentication: a throttled key gets its 429 whatever
        it sends, and costs the key lookup alone (no body parsed, no number or assistant
        looked up)."""
        ApiKey.objects.filter(organization=tenant.organization).update(last_used_at=timezone.now())
        with throttle_rates(initiate="1/min"):
            assert initiate(tenant).status_code == 200
            with django_assert_num_queries(1):  # SELECT the API key JOIN its organization
                throttled = tenant.client.post(URL, body, content_type="application/json")

        assert throttled.status_code == 429
        assert throttled.json() == {
            "detail": "Request was throttled. Expected available in 60 seconds."
        }
        assert throttled["Retry-After"] == "60"
        assert Call.objects.count() == 1
        assert_money_consistent(tenant.organization)


def test_the_counters_live_in_redis_and_hold_across_processes(tenant: Tenant) -> None:
    """Forgetting everything in this process (as another process would know nothing) does not
    reset the limit: the history is in Redis."""
    prefix = f"test-{uuid.uuid4().hex}"
    cache = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    raw = redis.Redis.from_url(REDIS_URL)
    try:
        shared = override_settings(CACHES={"default": {**cache, "KEY_PREFIX": prefix}})
        with shared, throttle_rates(api_key="2/min"):
            first = [tenant.client.get("/calls").status_code for _ in range(2)]
            caches.close_all()
            caches._connections = Local(caches.thread_critical)  # a new process's handlers
            after_restart = tenant.client.get("/calls")

        assert first == [200, 200]
        assert after_restart.status_code == 429
        assert [key.decode() for key in raw.keys(f"{prefix}:*")] == [
            f"{prefix}:1:throttle_api_key_{tenant.organization.api_keys.get().pk}"
        ]
    finally:
        for key in raw.keys(f"{prefix}:*"):
            raw.delete(key)


def test_a_redis_url_selects_djangos_own_redis_cache() -> None:
    import environ

    config = environ.Env.cache_url_config("redis://127.0.0.1:6379/1")

    assert config["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert config["LOCATION"] == "redis://127.0.0.1:6379/1"


def test_the_live_call_count_stops_at_what_the_cap_asks(tenant: Tenant, number) -> None:
    from calls.selectors import calls_in_progress

    for _ in range(4):
        assert initiate(tenant).status_code == 200
    org = tenant.organization.pk

    assert calls_in_progress(organization_id=org, up_to=10) == 4
    assert calls_in_progress(organization_id=org, up_to=3) == 3


@pytest.fixture
def redis_cache() -> Iterator[dict[str, str]]:
    """The default cache in a Redis database of its own, under a prefix no other run uses."""
    prefix = f"test-{uuid.uuid4().hex}"
    raw = redis.Redis.from_url(REDIS_URL)
    try:
        yield {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": prefix,
        }
    finally:
        for key in raw.keys(f"{prefix}:*"):
            raw.delete(key)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound (so nobody else takes it) but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(autouse=True)
def _no_outage_remembered() -> Iterator[None]:
    outages.clear()
    yield
    outages.clear()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["redis", "local memory"])
def test_forty_requests_at_once_on_a_ten_a_minute_key_admit_exactly_ten(
    redis_cache: dict[str, str], where: str
) -> None:
    tenant = make_tenant()
    cache = redis_cache if where == "redis" else {"BACKEND": LOCMEM, "LOCATION": uuid.uuid4().hex}

    def get_calls(_: int):  # type: ignore[no-untyped-def]
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant.api_key}")
        return client.get("/calls")

    with override_settings(CACHES={"default": cache}), throttle_rates(api_key="10/min"):
        responses = all_at_once(40, get_calls)

    assert Counter(r.status_code for r in responses) == {200: 10, 429: 30}
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json() == {"detail": "Request was throttled. Expected available in 60 seconds."}
    assert refused["Retry-After"] == "60"
    if where == "redis":
        key = f"{cache['KEY_PREFIX']}:1:throttle_api_key_{tenant.organization.api_keys.get().pk}"
        assert redis.Redis.from_url(REDIS_URL).zcard(key) == 10


def test_a_request_leaves_the_window_a_minute_after_it_was_let_through(
    tenant: Tenant, redis_cache: dict[str, str]
) -> None:
    raw = redis.Redis.from_url(REDIS_URL)
    key = f"{redis_cache['KEY_PREFIX']}:1:throttle_api_key_{tenant.organization.api_keys.get().pk}"
    with override_settings(CACHES={"default": redis_cache}), throttle_rates(api_key="2/min"):
        assert [tenant.client.get("/calls").status_code for _ in range(2)] == [200, 200]
        # The first request was let through 45 s ago (Redis's clock): it leaves the window in 15.
        now = float(raw.time()[0])
        oldest, newest = raw.zrange(key, 0, -1)
        raw.zadd(key, {oldest: now - 45})
        refused = tenant.client.get("/calls")
        raw.zadd(key, {oldest: now - 61, newest: now - 61})
        let_through = tenant.client.get("/calls")

    assert refused.status_code == 429
    assert refused["Retry-After"] == "15"
    assert let_through.status_code == 200
    assert raw.zcard(key) == 1


def test_with_the_cache_down_requests_are_let_through_and_it_is_logged_once(
    tenant: Tenant, number, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    down = {"BACKEND": "django.core.cache.backends.redis.RedisCache"}
    down["LOCATION"] = f"redis://127.0.0.1:{closed_port}/0"
    with override_settings(CACHES={"default": down}), throttle_rates("1/min", "1/min"):
        statuses = [tenant.client.get("/calls").status_code for _ in range(3)]
        statuses.append(initiate(tenant).status_code)
        statuses.append(tenant.client.get("/billing/balance").status_code)

    assert statuses == [200] * 5
    warnings = [r.getMessage() for r in caplog.records if r.name == "burki.throttling"]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "rate limits not enforced: the cache cannot be reached (ConnectionError: "
    )
    assert Call.objects.count() == 1
    assert_money_consistent(tenant.organization)


def test_a_cache_that_failed_is_left_alone_for_a_few_seconds_then_asked_again(
    tenant: Tenant, redis_cache: dict[str, str]
) -> None:
    failed_at = time.monotonic()
    with mock.patch("burki.throttling.time.monotonic", return_value=failed_at):
        outages.record(REDIS_URL, ConnectionError("refused"))
    soon = mock.patch("burki.throttling.time.monotonic", return_value=failed_at + 1)
    later = mock.patch(
        "burki.throttling.time.monotonic", return_value=failed_at + OUTAGE_RETRY_SECONDS
    )
    with override_settings(CACHES={"default": redis_cache}), throttle_rates(api_key="1/min"):
        with soon:
            not_counted = [tenant.client.get("/calls").status_code for _ in range(2)]
        with later:
            counted = [tenant.client.get("/calls").status_code for _ in range(2)]

    assert not_counted == [200, 200]
    assert counted == [200, 429]


@pytest.mark.django_db(transaction=True)
def test_with_cache_url_at_a_closed_port_the_service_answers(closed_port: int) -> None:
    """The settings as a deployment reads them (CACHE_URL in the environment), in a process of
    its own: every endpoint answers, the admin included, and the outage is logged once."""
    tenant = make_tenant()
    PhoneNumberFactory(organization=tenant.organization, number=BODY["from_phone_number"])
    parts = urlsplit(os.environ["DATABASE_URL"])
    database_url = urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))
    script = f"""
import json, django
django.setup()
from django.test import Client
client = Client(HTTP_AUTHORIZATION="Bearer {tenant.api_key}")
answers = [client.get(path).status_code for path in ("/health", "/calls", "/calls")]
answers.append(client.get("/billing/balance").status_code)
answers.append(client.post("/calls/initiate", {json.dumps(BODY)!r},
                           content_type="application/json").status_code)
answers.append(Client().get("/admin/login/").status_code)
print(json.dumps(answers))
"""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "burki.settings",
        "DEBUG": "false",
        "DATABASE_URL": database_url,
        "CACHE_URL": f"redis://127.0.0.1:{closed_port}/0",
        "ALLOWED_HOSTS": "testserver",
        "CELERY_BROKER_URL": "memory://",
        "LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(  # noqa: S603 (our own interpreter)
        [sys.executable, "-c", script],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [200, 200, 200, 200, 200, 200]
    assert done.stderr.count("rate limits not enforced") == 1, done.stderr
    assert Call.objects.filter(organization=tenant.organization).count() == 1
    assert_money_consistent(tenant.organization)


@pytest.mark.django_db(transaction=True)
@override_settings(WEB_INITIATIONS_AT_ONCE=1)
def test_an_initiation_waiting_on_its_provider_gives_its_slot_to_the_next() -> None:
    """One initiation at a time per process may work, but not counting those waiting on the
    provider: three at once all reach the provider together."""
    tenant = make_tenant()
    tenant.organization.max_concurrent_calls = 10
    tenant.organization.save()
    PhoneNumberFactory(organization=tenant.organization, number=BODY["from_phone_number"])
    together = threading.Barrier(3, timeout=10)
    real = SandboxProvider.place_call

    def place_call(self, call, account):  # type: ignore[no-untyped-def]
        together.wait()  # broken (and the call failed) unless all three get here
        return real(self, call, account)

    def send(_: int):  # type: ignore[no-untyped-def]
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant.api_key}")
        return client.post(URL, BODY, format="json")

    with mock.patch.object(SandboxProvider, "place_call", place_call):
        answers = all_at_once(3, send)

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert Call.objects.filter(status="initiated").count() == 3
    assert_money_consistent(tenant.organization)


@pytest.mark.django_db(transaction=True)
@override_settings(WEB_INITIATIONS_AT_ONCE=1)
def test_initiations_past_the_limit_wait_their_turn_and_other_requests_do_not() -> None:
    """While one initiation works (before its provider), the next waits for the slot, and a
    request that is no initiation does not wait at all."""
    tenant = make_tenant()
    PhoneNumberFactory(organization=tenant.organization, number=BODY["from_phone_number"])
    inside = threading.Event()
    finish = threading.Event()

    def slow_render(*args, **kwargs):  # type: ignore[no-untyped-def]
        inside.set()  # working, before any wait on the provider: the slot is taken
        finish.wait(timeout=10)
        return real_render(*args, **kwargs)

    real_render = services.render
    second: list = []

    def initiate_in_thread(store: list) -> None:
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant.api_key}")
            store.append(client.post(URL, BODY, format="json"))
        finally:
            connections.close_all()

    first: list = []
    with mock.patch.object(services, "render", side_effect=slow_render):
        one = threading.Thread(target=initiate_in_thread, args=(first,))
        one.start()
        assert inside.wait(timeout=10)
        inside.clear()
        two = threading.Thread(target=initiate_in_thread, args=(second,))
        two.start()
        listing = APIClient()
        listing.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant.api_key}")
        meanwhile = listing.get("/calls").status_code
        second_started = inside.wait(timeout=1)
        finish.set()
        one.join(timeout=10)
        two.join(timeout=10)

    assert meanwhile == 200
    assert not second_started  # it waited for the first one's slot
    assert [r.status_code for r in first + second] == [200, 200]
