"""Hypothesis against the provider webhooks, which the public schema (and so schemathesis)
leaves out: whatever arrives, the answer is never a 5xx; a forged request changes nothing;
even a correctly signed one with odd values leaves the money consistent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import responses
from django.conf import settings as django_settings
from django.test import Client, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from billing.models import LedgerEntry
from calls.models import Call, CallEvent
from tests.conftest import Tenant, assert_money_consistent, make_tenant
from tests.factories import PhoneNumberFactory

AUTH_TOKEN = "twilio-auth-token-0123456789abcdef"
CALLS_URL = "https://api.twilio.com/2010-04-01/Accounts/AC" + "a" * 32 + "/Calls.json"

FUZZ = settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    # Each example's rows are its own (see place_call); the fixtures only hold the tenant.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

texts = st.text(max_size=40)
twilio_values = {
    "CallStatus": st.one_of(
        st.sampled_from(
            [
                "queued",
                "initiated",
                "ringing",
                "in-progress",
                "answered",
                "completed",
                "busy",
                "no-answer",
                "failed",
                "canceled",
            ]
        ),
        texts,
    ),
    "CallDuration": st.one_of(
        st.integers(-5, 10**20).map(str), st.sampled_from(["", "²", "٣", "1e3", "3.5"]), texts
    ),
    "CallSid": st.one_of(st.just("CA" + "0" * 32), texts, st.text("CA0123", min_size=129)),
    "SipResponseCode": texts,
    "ErrorCode": texts,
    "AnsweredBy": texts,
}
forms = st.fixed_dictionaries({}, optional=twilio_values) | st.dictionaries(texts, texts)


@pytest.fixture(autouse=True)
def no_limits() -> Iterator[None]:
    """Every example places a call that stays open, all with one API key: the cap on
    simultaneous calls and the rate limits (tests/test_limits.py) would refuse most of them."""
    rest_framework = {
        **django_settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api_key": None, "initiate": None},
    }
    with override_settings(MAX_CONCURRENT_CALLS=10**6, REST_FRAMEWORK=rest_framework):
        yield


@pytest.fixture
def tenant(db: None) -> Tenant:
    # Every example places a call and its hold stays open: fund them all.
    return make_tenant(balance_cents=10**9)


@pytest.fixture
def number(tenant: Tenant):
    return PhoneNumberFactory(organization=tenant.organization, twilio=True)


def place_call(tenant: Tenant, number) -> Call:
    with responses.RequestsMock() as mock:
        sid = "CA" + uuid.uuid4().hex
        mock.post(CALLS_URL, json={"sid": sid, "status": "queued"}, status=201)
        body = {"from_phone_number": str(number.number), "to_phone_number": "+15559876543"}
        response = tenant.client.post("/calls/initiate", body, format="json")
    assert response.status_code == 200, response.json()
    return Call.objects.get(pk=response.json()["call_id"])


def send(method: str, path: str, form: dict[str, str], **headers: Any) -> Any:
    """As a provider sends it: a urlencoded body (a query string for GET)."""
    client = Client()
    if method == "get":
        return client.get(path, form, **headers)
    return getattr(client, method)(
        path, urlencode(form), content_type="application/x-www-form-urlencoded", **headers
    )


@FUZZ
@given(
    form=forms,
    hook=st.sampled_from(["answer", "status"]),
    method=st.sampled_from(["get", "post", "put", "delete"]),
    signature=st.one_of(st.none(), texts, st.just(RequestValidator("x").compute_signature("", {}))),
    settings_header=st.one_of(
        st.none(), texts, st.just("algorithm=HMAC_SHA256"), st.just("algorithm=X")
    ),
    unknown_call=st.booleans(),
)
def test_a_forged_webhook_is_refused_and_changes_nothing(
    tenant: Tenant, number, form, hook, method, signature, settings_header, unknown_call
) -> None:
    call = place_call(tenant, number)
    call_id = uuid.uuid4() if unknown_call else call.pk
    headers = {}
    if signature is not None:
        headers["HTTP_X_TWILIO_SIGNATURE"] = signature
    if settings_header is not None:
        headers["HTTP_X_TWILIO_WEBHOOKS_SIGNATURE_SETTINGS"] = settings_header
    entries = LedgerEntry.objects.count()

    response = send(method, f"/webhooks/calls/{call_id}/{hook}", form, **headers)

    assert response.status_code < 500
    assert response.status_code in (200, 403, 404, 405)
    assert LedgerEntry.objects.count() == entries
    assert CallEvent.objects.filter(call=call).count() == 0
    assert Call.objects.get(pk=call.pk).status == "initiated"


@FUZZ
@given(forms=st.lists(forms, min_size=1, max_size=4))
def test_signed_status_webhooks_with_any_values_keep_the_money_consistent(
    tenant: Tenant, number, forms
) -> None:
    call = place_call(tenant, number)
    path = f"/webhooks/calls/{call.pk}/status"
    for form in forms:
        signature = RequestValidator(AUTH_TOKEN).compute_signature(
            "https://burki.test" + path, form
        )

        response = send("post", path, form, HTTP_X_TWILIO_SIGNATURE=signature)

        assert response.status_code == 200, (form, response.content)
    call.refresh_from_db()
    assert call.cost_cents is None or 0 <= call.cost_cents <= call.hold_cents
    assert_money_consistent(tenant.organization)
