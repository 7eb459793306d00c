"""Input no client should send, found by fuzzing: each is a clear 4xx, never a 500."""

from __future__ import annotations

import base64

import pytest

from billing.models import LedgerEntry
from calls.models import Call
from tests.conftest import Tenant
from tests.factories import PhoneNumberFactory


def cursor(querystring: str) -> str:
    return base64.b64encode(querystring.encode()).decode()


def test_json_nested_too_deep_to_decode_is_a_400(tenant: Tenant) -> None:
    PhoneNumberFactory(organization=tenant.organization, number="+15551234567")
    body = "[" * 100_000 + "]" * 100_000

    response = tenant.client.post("/calls/initiate", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {"detail": "JSON parse error - the body is nested too deeply."}
    assert Call.objects.count() == 0
    assert list(LedgerEntry.objects.values_list("kind", flat=True)) == ["top_up"]


@pytest.mark.parametrize("path", ["/calls", "/billing/ledger"])
@pytest.mark.parametrize(
    "position",
    [
        "garbage",
        "2026-13-45 00:00:00+00:00",  # the shape of a timestamp, not a date
        "2026-01-01 00:00:00",  # no time zone: we never hand out such a cursor
        "\x00",
        "",
    ],
)
def test_a_forged_cursor_position_is_a_404_like_any_bad_cursor(
    tenant: Tenant, path: str, position: str
) -> None:
    response = tenant.client.get(path, {"cursor": cursor(f"o=0&r=0&p={position}")})

    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid cursor"}


def test_a_cursor_we_handed_out_still_pages(tenant: Tenant) -> None:
    number = PhoneNumberFactory(organization=tenant.organization)
    for to in ("+15559876541", "+15559876542", "+15559876543"):
        body = {"from_phone_number": str(number.number), "to_phone_number": to}
        assert tenant.client.post("/calls/initiate", body, format="json").status_code == 200

    first = tenant.client.get("/calls", {"page_size": 2}).json()
    second = tenant.client.get(first["next"]).json()

    seen = [call["to_phone_number"] for call in first["results"] + second["results"]]
    assert seen == ["+15559876543", "+15559876542", "+15559876541"]
    assert second["next"] is None


def test_an_empty_status_filter_is_a_400_not_a_silent_no_filter(tenant: Tenant) -> None:
    response = tenant.client.get("/calls", {"status": ""})

    assert response.status_code == 400
    assert response.json() == {
        "detail": "status must be one of: queued, unknown, initiated, ringing, in-progress, "
        "completed, busy, no-answer, failed, canceled",
        "errors": {
            "status": [
                "status must be one of: queued, unknown, initiated, ringing, in-progress, "
                "completed, busy, no-answer, failed, canceled"
            ]
        },
    }


@pytest.mark.parametrize(
    "to",
    [
        "+1 555 987 6543 ext. 89",  # was dialled without the extension
        "+15559876543;ext=89",
        "+270000000",  # was dialled as +27000000, a zero short
        "+8110000000000000",  # 16 digits: phonenumbers calls it possible, E.164 does not
    ],
)
def test_a_number_that_cannot_be_dialled_exactly_as_given_is_a_400(tenant: Tenant, to: str) -> None:
    PhoneNumberFactory(organization=tenant.organization, number="+15551234567")

    response = tenant.client.post(
        "/calls/initiate",
        {"from_phone_number": "+15551234567", "to_phone_number": to},
        format="json",
    )

    assert response.status_code == 400
    message = "to_phone_number must be a phone number in E.164 format, e.g. +15551234567"
    assert response.json() == {"detail": message, "errors": {"to_phone_number": [message]}}
    assert Call.objects.count() == 0
