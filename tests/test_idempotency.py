"""Idempotency-Key on POST /calls/initiate: a retry never dials twice."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.services import balance_top_up
from calls.models import Call, IdempotencyKey
from telephony.providers.sandbox import SandboxProvider
from tests.conftest import Tenant, assert_money_consistent, make_tenant
from tests.factories import PhoneNumberFactory
from tests.test_query_budget import INITIATE

URL = "/calls/initiate"
BODY = {"from_phone_number": "+15551234567", "to_phone_number": "+15559876543"}


def post(tenant: Tenant, body: object = BODY, key: str | None = "key-1"):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return tenant.client.post(URL, body, format="json", **headers)


@pytest.fixture
def number(tenant: Tenant):
    return PhoneNumberFactory(organization=tenant.organization, number="+15551234567")


def count_dials():
    """Count what reaches the provider boundary, letting the sandbox do its work."""
    return mock.patch.object(
        SandboxProvider, "place_call", autospec=True, side_effect=SandboxProvider.place_call
    )


def test_a_retry_gets_the_first_answer_without_dialling_again(tenant: Tenant, number) -> None:
    with count_dials() as place_call:
        first = post(tenant)
        again = post(tenant)

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")
    assert place_call.call_count == 1
    call = Call.objects.get()
    assert first.json() == {
        "message": "Call initiated successfully",
        "call_sid": call.call_sid,
        "call_id": str(call.pk),
    }
    record = IdempotencyKey.objects.get()
    assert (record.status, record.response_status, record.call) == ("done", 200, call)
    assert record.expires_at - record.created_at == timedelta(hours=24)
    assert_money_consistent(tenant.organization)


def test_the_same_request_written_differently_is_the_same_request(tenant: Tenant, number) -> None:
    first = post(tenant)
    again = post(
        tenant,
        {
            "to_phone_number": "+1 555 987 6543",
            "from_phone_number": "+1 (555) 123-4567",
            "assistant_id": None,
        },
    )

    assert again.status_code == 200
    assert again.json() == first.json()
    assert Call.objects.count() == 1


def test_the_same_key_with_another_body_is_a_422_and_changes_nothing(
    tenant: Tenant, number
) -> None:
    post(tenant)

    response = post(tenant, {**BODY, "to_phone_number": "+15559876000"})

    assert response.status_code == 422
    assert response.json() == {
        "detail": "This Idempotency-Key was already used with a different request body."
    }
    assert Call.objects.count() == 1
    assert_money_consistent(tenant.organization)


def test_a_retry_while_the_first_request_is_still_dialling_is_a_409(tenant: Tenant, number) -> None:
    inner = {}

    def dial_and_meanwhile_retry(provider, call, account):
        inner["response"] = post(tenant)
        return "SB" + "0" * 32

    with mock.patch.object(SandboxProvider, "place_call", dial_and_meanwhile_retry):
        first = post(tenant)

    assert first.status_code == 200
    assert inner["response"].status_code == 409
    assert inner["response"].json() == {
        "detail": "A request with this Idempotency-Key is still being processed; retry shortly."
    }
    assert Call.objects.count() == 1
    assert post(tenant).json() == first.json()


def test_keys_belong_to_one_organization(tenant: Tenant, outsider: Tenant, number) -> None:
    PhoneNumberFactory(organization=outsider.organization, number="+15557654321")

    mine = post(tenant)
    theirs = post(outsider, {**BODY, "from_phone_number": "+15557654321"})

    assert (mine.status_code, theirs.status_code) == (200, 200)
    assert mine.json()["call_id"] != theirs.json()["call_id"]
    assert Call.objects.filter(organization=outsider.organization).count() == 1
    assert IdempotencyKey.objects.count() == 2


def test_a_402_is_replayed_even_after_a_top_up(db) -> None:
    tenant = make_tenant(balance_cents=0)
    PhoneNumberFactory(organization=tenant.organization, number="+15551234567")
    first = post(tenant)
    balance_top_up(organization=tenant.organization, amount_cents=1_000)

    again = post(tenant)
    fresh = post(tenant, key="key-2")

    assert first.status_code == again.status_code == 402
    assert (
        again.json()
        == first.json()
        == {"detail": "Insufficient balance. Please add funds to continue making calls."}
    )
    assert fresh.status_code == 200
    assert Call.objects.count() == 1


@pytest.mark.parametrize(
    ("to", "status", "call_status"),
    [("+15550000500", 502, "failed"), ("+15550000504", 504, "unknown")],
)
def test_a_provider_failure_is_replayed_and_never_redialled(
    tenant: Tenant, number, to: str, status: int, call_status: str
) -> None:
    with count_dials() as place_call:
        first = post(tenant, {**BODY, "to_phone_number": to})
        again = post(tenant, {**BODY, "to_phone_number": to})

    assert first.status_code == again.status_code == status
    assert again.json() == first.json()
    assert place_call.call_count == 1
    assert Call.objects.get().status == call_status
    assert_money_consistent(tenant.organization)


def test_after_a_time_out_the_replay_names_the_call_that_may_have_been_placed(
    tenant: Tenant, number
) -> None:
    """Even when the request that timed out died before keeping its answer."""
    with mock.patch("calls.idempotency.idempotency_key_finish"):  # the worker died here
        first = post(tenant, {**BODY, "to_phone_number": "+15550000504"})
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(minutes=5))

    with count_dials() as place_call:
        replay = post(tenant, {**BODY, "to_phone_number": "+15550000504"})

    call = Call.objects.get()
    assert replay.status_code == first.status_code == 504
    assert (
        replay.json()
        == first.json()
        == {
            "detail": "The telephony provider did not answer in time; the call may have been "
            "placed. Follow it at GET /calls/{call_id}.",
            "call_id": str(call.pk),
        }
    )
    assert place_call.call_count == 0
    assert call.status == "unknown"


def test_a_404_is_replayed(tenant: Tenant) -> None:
    PhoneNumberFactory(organization=tenant.organization, number="+15551234567", assistant=None)

    first, again = post(tenant), post(tenant)

    assert first.status_code == again.status_code == 404
    assert again.json() == {"detail": "No assistant found for phone number +15551234567"}
    assert again["Idempotent-Replayed"] == "true"


def test_a_429_from_the_call_cap_releases_the_key_for_a_later_retry(tenant: Tenant, number) -> None:
    tenant.organization.max_concurrent_calls = 0
    tenant.organization.save()
    refused = post(tenant)
    tenant.organization.max_concurrent_calls = 1
    tenant.organization.save()

    retried = post(tenant)

    assert refused.status_code == 429
    assert retried.status_code == 200
    assert not retried.has_header("Idempotent-Replayed")
    assert Call.objects.count() == 1


def test_a_bad_body_does_not_use_up_the_key(tenant: Tenant, number) -> None:
    bad = post(tenant, {"from_phone_number": "+15551234567"})
    good = post(tenant)

    assert bad.status_code == 400
    assert good.status_code == 200
    assert Call.objects.count() == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "clé"])
def test_a_malformed_key_is_a_400(tenant: Tenant, number, key: str) -> None:
    response = post(tenant, key=key)

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Idempotency-Key must be 1 to 255 printable ASCII characters."
    }
    assert Call.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0


def test_an_expired_key_starts_afresh(tenant: Tenant, number) -> None:
    first = post(tenant)
    IdempotencyKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    again = post(tenant)

    assert again.status_code == 200
    assert again.json()["call_id"] != first.json()["call_id"]
    assert IdempotencyKey.objects.get().call_id == Call.objects.latest("created_at").pk


def test_the_purge_command_deletes_only_expired_keys(tenant: Tenant, number, capsys) -> None:
    post(tenant, key="old")
    post(tenant, {**BODY, "to_phone_number": "+15559876000"}, key="new")
    IdempotencyKey.objects.filter(key="old").update(expires_at=timezone.now())

    call_command("purge_idempotency_keys")

    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]
    assert capsys.readouterr().out == "Deleted 1 expired idempotency key(s).\n"


class TestARequestThatDied:
    """A worker killed mid-request leaves its key in flight; a later retry must still be safe."""

    def test_before_recording_a_call_its_key_is_taken_over(self, tenant: Tenant, number) -> None:
        crash = mock.patch("calls.apis.call_initiate", side_effect=KeyboardInterrupt)
        with crash, pytest.raises(KeyboardInterrupt):
            post(tenant)
        assert post(tenant).status_code == 409  # it might still be running
        IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(minutes=5))

        response = post(tenant)

        assert response.status_code == 200
        assert Call.objects.get().status == "initiated"
        assert IdempotencyKey.objects.get().status == "done"

    def test_after_recording_a_call_the_retry_is_answered_from_the_call(
        self, tenant: Tenant, number
    ) -> None:
        crash = mock.patch.object(SandboxProvider, "place_call", side_effect=KeyboardInterrupt)
        with crash, pytest.raises(KeyboardInterrupt):
            post(tenant)
        IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(minutes=5))
        assert post(tenant).status_code == 409  # queued: the outcome is not known yet
        Call.objects.update(created_at=timezone.now() - timedelta(minutes=5))
        call_command("reconcile_calls")

        response = post(tenant)

        assert response.status_code == 502
        assert response.json() == {
            "detail": "Never placed: the request stopped before Sandbox placed the call."
        }
        assert post(tenant).json() == response.json()
        assert Call.objects.count() == 1
        assert_money_consistent(tenant.organization)

    def test_a_request_that_was_only_slow_neither_records_nor_dials_once_taken_over(
        self, tenant: Tenant, number
    ) -> None:
        """Stuck long enough to look dead (here: before it records its call), the first
        request's key is taken over by a retry, which dials. When the first one goes on, its
        claim is no longer its own: it records nothing, holds nothing and dials nothing."""
        from calls import services

        resolve = services.call_resolve_assistant
        inner: dict = {}

        def stuck_until_a_retry_took_over(**kwargs):
            if "retry" not in inner:  # the first request; the retry goes straight on
                inner["retry"] = None
                IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(minutes=5))
                inner["retry"] = post(tenant)
            return resolve(**kwargs)

        slow = mock.patch.object(services, "call_resolve_assistant", stuck_until_a_retry_took_over)
        with slow, count_dials() as place_call:
            first = post(tenant)

        assert inner["retry"].status_code == 200
        assert first.status_code == 409
        assert first.json() == {
            "detail": "A request with this Idempotency-Key is still being processed; retry shortly."
        }
        assert place_call.call_count == 1
        call = Call.objects.get()
        assert inner["retry"].json()["call_id"] == str(call.pk)
        record = IdempotencyKey.objects.get()
        assert (record.status, record.response_status, record.call) == ("done", 200, call)
        assert post(tenant).json() == inner["retry"].json()
        assert_money_consistent(tenant.organization)


def test_an_unexpected_error_is_a_500_that_is_kept(tenant: Tenant, number) -> None:
    bug = mock.patch("calls.apis.call_initiate", side_effect=RuntimeError("boom"))
    with bug, pytest.raises(RuntimeError):
        post(tenant)

    again = post(tenant)

    assert again.status_code == 500
    assert again.json() == {"detail": "Internal server error."}
    assert Call.objects.count() == 0


class TestQueries:
    def test_without_the_header_nothing_is_added(
        self, tenant: Tenant, number, django_assert_num_queries
    ) -> None:
        post(tenant, key=None)  # warm up: the key's last use is recorded once a minute
        with django_assert_num_queries(INITIATE):
            assert post(tenant, key=None).status_code == 200

    def test_with_the_header(self, tenant: Tenant, number, django_assert_num_queries) -> None:
        post(tenant, key="warm-up")
        # The key's claim (SAVEPOINT, INSERT, RELEASE), linking it to the call, keeping the answer.
        with django_assert_num_queries(INITIATE + 5):
            assert post(tenant).status_code == 200
        with django_assert_num_queries(7):
            assert post(tenant).status_code == 200
