"""GET /calls and GET /calls/{call_id}, and the sandbox lifecycle they show."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.models import Balance, LedgerEntry
from burki.models import ApiKey
from calls.models import Call, CallEvent
from calls.services import call_play_simulated
from telephony.providers import get_provider
from telephony.providers.sandbox import ANSWER_AT, SandboxProvider
from tests.conftest import Tenant, assert_money_consistent
from tests.factories import PhoneNumberFactory

TO = "+15559876543"


@pytest.fixture
def number(tenant: Tenant):
    return PhoneNumberFactory(organization=tenant.organization, number="+15551234567")


def place(tenant: Tenant, to: str = TO, **extra: object) -> Call:
    response = tenant.client.post(
        "/calls/initiate",
        {"from_phone_number": "+15551234567", "to_phone_number": to, **extra},
        format="json",
    )
    assert response.status_code == 200, response.json()
    return Call.objects.get(pk=response.json()["call_id"])


def test_a_call_shows_everything_the_docs_promise(tenant: Tenant, number) -> None:
    call = place(
        tenant,
        welcome_message="Hello {{name}}, this is a reminder about your appointment tomorrow "
        "at {{time}}.",
        variables={"name": "John Doe", "time": "10 AM"},
        metadata={"crm_contact_id": "c_8231", "attempt": 2, "vip": True, "note": None},
        voicemail={"on_machine": "leave_message", "message": "Hi {{name}}, call us back."},
    )

    response = tenant.client.get(f"/calls/{call.pk}")

    assert response.status_code == 200
    body = response.json()
    assert body == {
        "call_id": str(call.pk),
        "call_sid": call.call_sid,
        "status": "initiated",
        "from_phone_number": "+15551234567",
        "to_phone_number": TO,
        "assistant_id": number.assistant_id,
        "conversation_flow_id": None,
        "provider": "sandbox",
        "welcome_message": "Hello John Doe, this is a reminder about your appointment tomorrow "
        "at 10 AM.",
        "agenda": "",
        "variables": {"name": "John Doe", "time": "10 AM"},
        "metadata": {"crm_contact_id": "c_8231", "attempt": 2, "vip": True, "note": None},
        "voicemail": {"on_machine": "leave_message", "message": "Hi John Doe, call us back."},
        "answered_by": None,
        "transferred_to": "",
        "transferred_at": None,
        "time_limit_seconds": 600,
        "rate_cents_per_minute": 10,
        "duration_seconds": None,
        "cost_cents": None,
        "end_reason": "",
        "settled_by": None,
        "error": "",
        "created_at": body["created_at"],
        "initiated_at": body["initiated_at"],
        "answered_at": None,
        "ended_at": None,
        "events": [],
    }


def play_out(call: Call) -> None:
    """What the worker does with a sandbox call's script, every step at once."""
    provider = get_provider("sandbox")
    script = provider.call_script(
        call_sid=call.call_sid, to_number=call.to_number, time_limit_seconds=call.time_limit_seconds
    )
    for step in range(len(script)):
        call_play_simulated(call_id=call.pk, step=step)


def test_a_sandbox_call_rings_answers_and_settles_on_its_own_clock(tenant: Tenant, number) -> None:
    call = place(tenant)
    play_out(call)
    talk = SandboxProvider.talk_seconds(call.call_sid, call.time_limit_seconds)

    body = tenant.client.get(f"/calls/{call.pk}").json()

    assert body["status"] == "completed"
    assert body["settled_by"] == "provider"  # the script is the sandbox's own record
    assert body["duration_seconds"] == talk
    assert body["cost_cents"] == -(-talk * 10 // 60)
    assert [e["status"] for e in body["events"]] == ["ringing", "in-progress", "completed"]
    call.refresh_from_db()
    # Stamped on the call's own clock, so the times agree with the bill.
    assert call.answered_at == call.initiated_at + timedelta(seconds=ANSWER_AT)
    assert call.ended_at == call.answered_at + timedelta(seconds=talk)
    assert Balance.objects.get(organization=tenant.organization).held_cents == 0
    assert (
        LedgerEntry.objects.filter(call_id=call.pk, kind="charge").get().amount_cents
        == -body["cost_cents"]
    )
    assert_money_consistent(tenant.organization)

    # Playing a step again (a task delivered twice) changes nothing.
    call_play_simulated(call_id=call.pk, step=2)
    assert tenant.client.get(f"/calls/{call.pk}").json() == body
    assert LedgerEntry.objects.filter(call_id=call.pk).count() == 3


def test_a_busy_sandbox_destination_ends_busy_and_costs_nothing(tenant: Tenant, number) -> None:
    call = place(tenant, to="+15550000002")
    play_out(call)

    body = tenant.client.get(f"/calls/{call.pk}").json()

    assert (body["status"], body["cost_cents"], body["end_reason"]) == ("busy", 0, "486 Busy Here")
    assert_money_consistent(tenant.organization)


def test_reading_calls_writes_nothing(tenant: Tenant, number) -> None:
    """Reads are reads: a call long due to have ended is not moved on by looking at it (the
    worker plays it), so no GET ever writes a row."""
    call = place(tenant)
    Call.objects.filter(pk=call.pk).update(initiated_at=timezone.now() - timedelta(minutes=5))
    ApiKey.objects.filter(organization=tenant.organization).update(last_used_at=timezone.now())

    with CaptureQueriesContext(connection) as queries:
        detail = tenant.client.get(f"/calls/{call.pk}")
        listing = tenant.client.get("/calls")
        filtered = tenant.client.get("/calls?status=initiated")

    assert [r.status_code for r in (detail, listing, filtered)] == [200, 200, 200]
    assert detail.json()["status"] == "initiated"
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE")
    ]
    assert writes == []
    assert not CallEvent.objects.filter(call_id=call.pk).exists()


def test_another_organizations_call_is_a_404(tenant: Tenant, outsider: Tenant, number) -> None:
    call = place(tenant)

    response = outsider.client.get(f"/calls/{call.pk}")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_the_list_is_the_callers_own_newest_first(tenant: Tenant, outsider: Tenant, number) -> None:
    first, second = place(tenant), place(tenant)
    PhoneNumberFactory(organization=outsider.organization, number="+15557654321")
    outsider.client.post(
        "/calls/initiate",
        {"from_phone_number": "+15557654321", "to_phone_number": TO},
        format="json",
    )

    body = tenant.client.get("/calls").json()

    assert [c["call_id"] for c in body["results"]] == [str(second.pk), str(first.pk)]
    assert body["next"] is None and body["previous"] is None
    assert [c["call_id"] for c in outsider.client.get("/calls").json()["results"]] != []
    assert Call.objects.count() == 3


def test_the_list_pages_and_filters_by_status(tenant: Tenant, number) -> None:
    calls = [place(tenant) for _ in range(3)]
    failed = tenant.client.post(
        "/calls/initiate",
        {"from_phone_number": "+15551234567", "to_phone_number": "+15550000500"},
        format="json",
    )
    assert failed.status_code == 502

    page = tenant.client.get("/calls?page_size=2").json()
    rest = tenant.client.get(page["next"]).json()
    only_failed = tenant.client.get("/calls?status=failed").json()

    assert len(page["results"]) == 2 and len(rest["results"]) == 2
    listed = {c["call_id"] for c in page["results"] + rest["results"]}
    assert {str(c.pk) for c in calls} < listed
    assert [c["status"] for c in only_failed["results"]] == ["failed"]


def test_an_unknown_status_filter_is_a_400(tenant: Tenant) -> None:
    response = tenant.client.get("/calls?status=bogus")

    assert response.status_code == 400
    assert response.json()["detail"] == (
        "status must be one of: queued, unknown, initiated, ringing, in-progress, completed, busy, "
        "no-answer, failed, canceled"
    )


def test_a_malformed_call_id_is_a_404(tenant: Tenant) -> None:
    response = tenant.client.get("/calls/not-a-uuid")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
