"""Call control on the sandbox, as the demo shows it: answering-machine detection (its
`...0009` numbers are answered by a machine) and transfer, with what is refused and why."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.utils import timezone

from billing.models import Balance, LedgerEntry
from calls.events import call_event_data
from calls.models import Call, CallEvent
from calls.services import Voicemail, call_play_simulated
from tests.conftest import Tenant, assert_money_consistent
from tests.factories import PhoneNumberFactory
from tests.test_provider_conformance import TwilioDriver
from webhooks.models import WebhookEvent

FROM = "+15551234567"
PERSON = "+15559876543"
MACHINE = "+15559870009"


@pytest.fixture
def number(tenant: Tenant):
    return PhoneNumberFactory(organization=tenant.organization, number=FROM)


def initiate(tenant: Tenant, to: str = PERSON, **body: Any):
    return tenant.client.post(
        "/calls/initiate", {"from_phone_number": FROM, "to_phone_number": to, **body}, format="json"
    )


def place(tenant: Tenant, to: str, **body: Any) -> Call:
    response = initiate(tenant, to, **body)
    assert response.status_code == 200, response.json()
    return Call.objects.get(pk=response.json()["call_id"])


def play(call: Call, *steps: int, at: float | None = None) -> None:
    """Play these steps of the call's script, as the worker would (`at`: as if that many
    seconds had gone since the call was placed)."""
    if at is not None:
        Call.objects.filter(pk=call.pk).update(initiated_at=timezone.now() - timedelta(seconds=at))
    for step in steps:
        call_play_simulated(call_id=call.pk, step=step)
    call.refresh_from_db()


def timeline(call: Call) -> list[tuple[str, dict[str, Any]]]:
    return [(e.status, e.detail) for e in CallEvent.objects.filter(call=call)]


def told(call: Call) -> list[str]:
    return list(
        WebhookEvent.objects.filter(subject_id=call.pk)
        .order_by("sequence")
        .values_list("type", flat=True)
    )


GREETING = "Hi, you've reached Sam. Leave a message after the beep."


def test_a_machine_is_hung_up_on_and_charged_only_the_seconds_used(tenant: Tenant, number) -> None:
    call = place(tenant, MACHINE, voicemail={"detect": True, "on_machine": "hangup"})
    play(call, 0, 1)  # rings, is answered
    play(call, 2, at=6)  # the verdict, 2 s after the answer

    assert (call.status, call.answered_by, call.duration_seconds, call.cost_cents) == (
        "completed",
        "machine",
        2,
        1,
    )
    assert call.end_reason == "Answered by a machine: hung up on detection."
    assert call.settled_by == "provider"
    play(call, 3, 4)  # the beep and the machine's own end come too late to matter
    assert timeline(call) == [
        ("ringing", {}),
        ("in-progress", {}),
        (
            "in-progress",
            {"greeting": GREETING, "answered_by": "machine", "action": "hanging up on the machine"},
        ),
        ("completed", {}),
    ]
    assert told(call) == [
        "call.status_changed",
        "call.status_changed",
        "call.status_changed",
        "call.status_changed",
        "call.answered_by",
        "call.status_changed",
        "call.ended",
    ]
    shown = tenant.client.get(f"/calls/{call.pk}").json()
    assert (shown["answered_by"], shown["status"], shown["cost_cents"]) == (
        "machine",
        "completed",
        1,
    )
    # What a customer's endpoint is sent: the call as the API shows it at the verdict.
    verdict = WebhookEvent.objects.get(subject_id=call.pk, type="call.answered_by")
    sent = call_event_data(verdict)
    assert (sent["answered_by"], sent["status"], sent["sequence"]) == ("machine", "in-progress", 5)
    assert sent["voicemail"] == {"on_machine": "hangup", "message": ""}
    balance = Balance.objects.get(organization=tenant.organization)
    assert (balance.balance_cents, balance.held_cents) == (10_000 - 1, 0)
    assert_money_consistent(tenant.organization)


def test_a_machine_gets_the_message_after_the_beep_and_the_call_then_ends(
    tenant: Tenant, number
) -> None:
    call = place(
        tenant,
        MACHINE,
        variables={"name": "Jo"},
        voicemail={"on_machine": "leave_message", "message": "Hi {{name}}, please call Acme."},
    )
    play(call, 0, 1)
    play(call, 2, at=6)  # a machine: wait for its greeting to end
    assert (call.status, call.answered_by, call.end_reason) == ("in-progress", "machine", "")
    play(call, 3, at=12)  # the beep: the message (5 words, 2 s) is said, then the call ends

    assert (call.status, call.duration_seconds, call.cost_cents) == ("completed", 10, 2)
    assert call.end_reason == (
        "Answered by a machine: the voicemail message was left after the beep."
    )
    assert timeline(call)[2:] == [
        (
            "in-progress",
            {
                "greeting": GREETING,
                "answered_by": "machine",
                "action": "waiting for the end of the machine's greeting",
            },
        ),
        (
            "in-progress",
            {
                "beep": "detected",
                "action": "the greeting ended: leaving the message",
                "message": "Hi Jo, please call Acme.",
            },
        ),
        ("completed", {}),
    ]
    assert_money_consistent(tenant.organization)


def test_a_machine_with_continue_stays_with_the_assistant_until_it_hangs_up(
    tenant: Tenant, number
) -> None:
    call = place(tenant, MACHINE, voicemail={"on_machine": "continue"})
    play(call, 0, 1, 2, 3, 4)

    assert (call.status, call.answered_by, call.duration_seconds) == ("completed", "machine", 40)
    assert call.end_reason == "the answering machine hung up"
    assert [detail.get("action") for _, detail in timeline(call)] == [
        None,
        None,
        "the assistant keeps the call (on_machine: continue)",
        None,
    ]
    assert_money_consistent(tenant.organization)


def test_a_person_is_left_with_the_assistant(tenant: Tenant, number) -> None:
    call = place(tenant, PERSON, voicemail={"on_machine": "hangup"})
    play(call, 0, 1, 2)

    assert (call.status, call.answered_by, call.end_reason) == ("in-progress", "human", "")
    assert timeline(call)[-1] == (
        "in-progress",
        {"answered_by": "human", "action": "the assistant keeps the call"},
    )
    play(call, 3)
    assert (call.status, call.answered_by, call.end_reason) == (
        "completed",
        "human",
        "callee hung up",
    )
    assert_money_consistent(tenant.organization)


def test_a_call_that_did_not_ask_is_never_told_who_answered(tenant: Tenant, number) -> None:
    call = place(tenant, MACHINE)
    play(call, 0, 1, 2, 3, 4)

    assert (call.status, call.answered_by, call.voicemail, call.duration_seconds) == (
        "completed",
        None,
        None,
        40,
    )
    assert [status for status, _ in timeline(call)] == ["ringing", "in-progress", "completed"]
    assert "call.answered_by" not in told(call)


@pytest.mark.parametrize(
    ("voicemail", "detail"),
    [
        ("yes", "voicemail must be an object"),
        ({}, "voicemail.on_machine is required"),
        (
            {"on_machine": "shout"},
            "voicemail.on_machine must be one of: hangup, leave_message, continue",
        ),
        ({"on_machine": "hangup", "detect": "maybe"}, "voicemail.detect must be true or false"),
        (
            {"on_machine": "leave_message"},
            "voicemail.message is required when on_machine is leave_message",
        ),
        ({"on_machine": "leave_message", "message": ""}, "voicemail.message must not be empty"),
        (
            {"on_machine": "hangup", "message": "Hello"},
            "voicemail.message is only used when on_machine is leave_message",
        ),
        (
            {"on_machine": "leave_message", "message": "x" * 1001},
            "voicemail.message must be at most 1000 characters",
        ),
        (
            {"on_machine": "leave_message", "message": "ring\x07ring"},
            "voicemail.message must not contain control characters (tabs and newlines are allowed)",
        ),
        (
            {"on_machine": "leave_message", "message": "Hi {{who}}"},
            "Variable 'who' is used in voicemail.message but was not supplied in variables.",
        ),
        (
            {"on_machine": "leave_message", "message": "{{a}} {{b}}"},
            "voicemail.message must be at most 1500 characters once its variables are filled in.",
        ),
    ],
)
def test_a_bad_voicemail_is_a_400_and_changes_nothing(
    tenant: Tenant, number, voicemail: object, detail: str
) -> None:
    response = initiate(tenant, variables={"a": "x" * 800, "b": "y" * 800}, voicemail=voicemail)

    assert response.status_code == 400
    assert response.json()["detail"] == detail
    assert Call.objects.count() == 0
    assert list(LedgerEntry.objects.values_list("kind", flat=True)) == ["top_up"]


def test_the_idempotency_key_covers_the_voicemail_settings(tenant: Tenant, number) -> None:
    key = {"HTTP_IDEMPOTENCY_KEY": "call-0009"}
    body = {"from_phone_number": FROM, "to_phone_number": MACHINE}
    first = tenant.client.post(
        "/calls/initiate", {**body, "voicemail": {"on_machine": "hangup"}}, format="json", **key
    )
    same = tenant.client.post(
        "/calls/initiate", {**body, "voicemail": {"on_machine": "hangup"}}, format="json", **key
    )
    other = tenant.client.post(
        "/calls/initiate", {**body, "voicemail": {"on_machine": "continue"}}, format="json", **key
    )

    assert first.status_code == same.status_code == 200
    assert same.json() == first.json() and same["Idempotent-Replayed"] == "true"
    assert (other.status_code, other.json()) == (
        422,
        {"detail": "This Idempotency-Key was already used with a different request body."},
    )
    assert Call.objects.get().voicemail == {"on_machine": "hangup", "message": ""}


def test_a_sandbox_call_in_progress_is_transferred_and_plays_on(tenant: Tenant, number) -> None:
    call = place(tenant, PERSON)
    play(call, 0, 1)

    response = tenant.client.post(
        f"/calls/{call.pk}/transfer", {"to_phone_number": "+1 (555) 765-4321"}, format="json"
    )

    assert response.status_code == 200, response.json()
    call.refresh_from_db()
    assert (call.status, call.transferred_to) == ("in-progress", "+15557654321")
    assert response.json()["transferred_to"] == "+15557654321"
    play(call, 2, 3)  # no verdict (it did not ask); then the end its script always had
    assert call.status == "completed"
    assert call.transferred_to == "+15557654321"
    assert_money_consistent(tenant.organization)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, "to_phone_number is required"),
        (
            {"to_phone_number": "call Sam"},
            "to_phone_number must be a phone number in E.164 format, e.g. +15551234567",
        ),
        ({"to_phone_number": 15557654321}, "to_phone_number must be a string"),
    ],
)
def test_a_transfer_to_no_number_is_a_400_and_changes_nothing(
    tenant: Tenant, number, body: dict[str, Any], detail: str
) -> None:
    call = place(tenant, PERSON)
    play(call, 0, 1)

    response = tenant.client.post(f"/calls/{call.pk}/transfer", body, format="json")

    assert (response.status_code, response.json()["detail"]) == (400, detail)
    call.refresh_from_db()
    assert (call.transferred_to, call.transferred_at) == ("", None)
    assert CallEvent.objects.filter(call=call).count() == 2


def test_a_transfer_the_provider_refuses_is_a_502_and_the_call_goes_on(
    client, tenant: Tenant
) -> None:
    twilio = TwilioDriver()
    twilio.number(tenant)
    with twilio.wire() as wire:
        twilio.accept(wire)
        call = place(tenant, PERSON)
    for webhook in twilio.lifecycle(call):
        assert twilio.report(client, call, webhook)[0] == 200
    url = f"https://api.twilio.com/2010-04-01/Accounts/{'AC' + 'a' * 32}/Calls/{call.call_sid}.json"

    with twilio.wire() as wire:
        wire.mock.post(
            url,
            json={"code": 21220, "message": "Call is not in-progress.", "status": 400},
            status=400,
        )
        response = tenant.client.post(
            f"/calls/{call.pk}/transfer", {"to_phone_number": "+15557654321"}, format="json"
        )

    assert (response.status_code, response.json()) == (
        502,
        {
            "detail": "The telephony provider could not transfer the call: Twilio refused: "
            "Call is not in-progress. (error 21220)"
        },
    )
    call.refresh_from_db()
    assert (call.status, call.transferred_to, call.transferred_at) == ("in-progress", "", None)
    assert "call.transferred" not in told(call)


def test_a_campaigns_voicemail_settings_are_checked_when_made() -> None:
    assert Voicemail("leave_message", "Call us back.").message == "Call us back."
    with pytest.raises(ValueError, match="on_machine must be one of"):
        Voicemail("shout")
    with pytest.raises(ValueError, match="a message is left"):
        Voicemail("leave_message")
    with pytest.raises(ValueError, match="a message is left"):
        Voicemail("hangup", "Hello")
    assert Voicemail.from_request({"detect": False, "on_machine": "hangup"}) is None
    assert Voicemail.from_request(None) is None


def test_a_verdict_riding_on_a_twilio_status_callback_is_applied_after_the_status(
    client, tenant: Tenant
) -> None:
    twilio = TwilioDriver()
    twilio.number(tenant)
    with twilio.wire() as wire:
        twilio.accept(wire)
        call = place(tenant, PERSON, voicemail={"on_machine": "hangup"})
    ringing = twilio.event(call, "ringing")
    assert twilio.report(client, call, ringing)[0] == 200
    answered = twilio.event(call, "in-progress")
    assert answered.form is not None
    form = {**answered.form, "AnsweredBy": "machine_start"}
    both = type(answered)(
        body=urlencode(form).encode(), content_type=answered.content_type, form=form
    )

    with twilio.wire() as wire:
        twilio.accept_hang_up(wire, call)
        response = twilio.report(client, call, both)
        asked = twilio.commands(wire)

    assert response == (200, {"detail": "Applied."})
    assert asked == [("POST", f"{call.call_sid}.json", {"Status": ["completed"]})]
    call.refresh_from_db()
    assert (call.status, call.answered_by) == ("in-progress", "machine")
    assert call.end_reason == "Answered by a machine: hung up on detection."
    assert [status for status, _ in timeline(call)] == ["ringing", "in-progress", "in-progress"]


def test_a_machine_hung_up_through_the_api_is_charged_no_longer_than_it_recorded(
    tenant: Tenant, number
) -> None:
    call = place(tenant, MACHINE)
    play(call, 0, 1)
    # 50 s in: the machine stopped recording 40 s after it answered (its script's own end).
    Call.objects.filter(pk=call.pk).update(initiated_at=timezone.now() - timedelta(seconds=50))

    response = tenant.client.post(f"/calls/{call.pk}/hangup")

    assert response.status_code == 200
    call.refresh_from_db()
    assert (call.status, call.duration_seconds, call.cost_cents) == ("completed", 40, 7)
    assert_money_consistent(tenant.organization)


def test_a_transfer_to_a_number_on_the_do_not_call_list_is_refused_and_asks_no_one(
    tenant: Tenant, number, monkeypatch
) -> None:
    from telephony.providers.sandbox import SandboxProvider

    def asked(*args: object, **kwargs: object) -> None:
        raise AssertionError("the provider was asked to transfer")

    monkeypatch.setattr(SandboxProvider, "transfer", asked)
    tenant.client.post("/do-not-call", {"number": "+15557654321"}, format="json")
    call = place(tenant, PERSON)
    play(call, 0, 1)

    response = tenant.client.post(
        f"/calls/{call.pk}/transfer", {"to_phone_number": "+15557654321"}, format="json"
    )

    assert (response.status_code, response.json()) == (
        403,
        {
            "detail": "+15557654321 is on your organization's do-not-call list; "
            "the call was not transferred."
        },
    )
    call.refresh_from_db()
    assert (call.status, call.transferred_to, call.transferred_at) == ("in-progress", "", None)
    assert CallEvent.objects.filter(call=call).count() == 2
