"""The cap on simultaneous calls per organization, and throttling per API key."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import redis
from asgiref.local import Local
from django.conf import settings
from django.core.cache import caches
from django.test import override_settings
from django.utils import timezone

from billing.models import Balance, LedgerEntry
from burki.models import ApiKey
from burki.services import api_key_create
from calls.models import Call
from calls.services import call_apply_event
from telephony.providers.base import StatusEvent
from tests.conftest import Tenant, assert_money_consistent
from tests.factories import PhoneNumberFactory

URL = "/calls/initiate"
BODY = {"from_phone_number": "+15551234567", "to_phone_number": "+15559876543"}
REDIS_URL = "redis://127.0.0.1:6379/15"


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
