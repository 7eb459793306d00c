"""The Twilio path with the real SDK: its HTTP caught at the transport by `responses`."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest
import responses
from twilio.request_validator import RequestValidator

from billing.models import Balance, LedgerEntry
from calls.models import Call, CallEvent
from calls.services import call_settle_from_record
from tests.conftest import Tenant, assert_money_consistent
from tests.factories import PhoneNumberFactory

ACCOUNT_SID = "AC" + "a" * 32
AUTH_TOKEN = "twilio-auth-token-0123456789abcdef"
CALLS_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
CALL_SID = "CA" + "0123456789abcdef" * 2
TO = "+15559876543"


@pytest.fixture
def number(tenant: Tenant):
    return PhoneNumberFactory(organization=tenant.organization, number="+15551234567", twilio=True)


def twilio_created(sid: str = CALL_SID) -> dict:
    return {"sid": sid, "status": "queued", "to": TO, "from": "+15551234567"}


def initiate(tenant: Tenant, **extra: object):
    body = {"from_phone_number": "+15551234567", "to_phone_number": TO, **extra}
    return tenant.client.post("/calls/initiate", body, format="json")


def record_url(sid: str = CALL_SID) -> str:
    return CALLS_URL.replace(".json", f"/{sid}.json")


def settle_on_twilios_record(call: Call, status: str, duration: str = "0") -> None:
    """The worker's step after an end Twilio's webhook reported: Twilio's webhooks are signed
    with the account's own auth token, so the call is settled on Twilio's record of it."""
    with responses.RequestsMock() as api:
        api.get(
            record_url(call.call_sid),
            json={"sid": call.call_sid, "status": status, "duration": duration},
        )
        assert call_settle_from_record(call_id=call.pk)


def signed_post(client, path: str, params: dict, token: str = AUTH_TOKEN):
    url = "https://burki.test" + path
    signature = RequestValidator(token).compute_signature(url, params)
    return client.post(path, params, HTTP_X_TWILIO_SIGNATURE=signature)


@responses.activate
def test_it_places_the_call_through_the_twilio_api(tenant: Tenant, number) -> None:
    responses.post(CALLS_URL, json=twilio_created(), status=201)

    response = initiate(tenant, welcome_message="Hi {{name}}", variables={"name": "Ann"})

    assert response.status_code == 200
    call = Call.objects.get()
    assert response.json() == {
        "message": "Call initiated successfully",
        "call_sid": CALL_SID,
        "call_id": str(call.pk),
    }
    assert (call.status, call.call_sid, call.provider) == ("initiated", CALL_SID, "twilio")
    (sent,) = responses.calls
    form = parse_qs(sent.request.body)
    base = f"https://burki.test/webhooks/calls/{call.pk}"
    assert form == {
        "To": [TO],
        "From": ["+15551234567"],
        "Url": [f"{base}/answer"],
        "Method": ["POST"],
        "StatusCallback": [f"{base}/status"],
        "StatusCallbackMethod": ["POST"],
        "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
        "TimeLimit": ["600"],
        "Timeout": ["30"],
    }
    assert sent.request.headers["Authorization"].startswith("Basic ")


@responses.activate
def test_a_twilio_refusal_is_a_502_and_releases_the_hold(tenant: Tenant, number) -> None:
    responses.post(
        CALLS_URL,
        json={
            "code": 21211,
            "message": "The 'To' number is not a valid phone number.",
            "status": 400,
        },
        status=400,
    )

    response = initiate(tenant)

    assert response.status_code == 502
    assert response.json() == {
        "detail": "Twilio refused the call: The 'To' number is not a valid phone number. "
        "(error 21211)"
    }
    call = Call.objects.get()
    assert (call.status, call.cost_cents) == ("failed", 0)
    assert Balance.objects.get(organization=tenant.organization).held_cents == 0
    assert_money_consistent(tenant.organization)


@responses.activate
def test_a_twilio_time_out_is_a_504(tenant: Tenant, number) -> None:
    import requests

    responses.post(CALLS_URL, body=requests.exceptions.ReadTimeout("read timed out"))

    response = initiate(tenant)

    assert response.status_code == 504
    assert Call.objects.get().status == "unknown"
    assert_money_consistent(tenant.organization)


@responses.activate
def test_an_unreachable_twilio_is_a_502(tenant: Tenant, number) -> None:
    import requests

    responses.post(CALLS_URL, body=requests.exceptions.ConnectionError("refused"))

    response = initiate(tenant)

    assert response.status_code == 502
    assert response.json() == {"detail": "Could not reach Twilio."}
    assert Call.objects.get().status == "failed"


@pytest.fixture
def placed_call(tenant: Tenant, number) -> Call:
    with responses.RequestsMock() as mock:
        mock.post(CALLS_URL, json=twilio_created(), status=201)
        response = initiate(
            tenant, welcome_message="Hello {{name}}", agenda="Remind", variables={"name": "Jo"}
        )
    return Call.objects.get(pk=response.json()["call_id"])


def test_the_answer_webhook_connects_the_call_to_the_media_stream(
    client, placed_call: Call
) -> None:
    response = signed_post(
        client, f"/webhooks/calls/{placed_call.pk}/answer", {"CallSid": CALL_SID}
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "application/xml"
    assert response.content.decode() == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://media.burki.test/stream">'
        f'<Parameter name="call_id" value="{placed_call.pk}" />'
        f'<Parameter name="assistant_id" value="{placed_call.assistant_id}" />'
        '<Parameter name="welcome_message" value="Hello Jo" />'
        '<Parameter name="agenda" value="Remind" />'
        "</Stream></Connect></Response>"
    )


@pytest.mark.parametrize(
    "signature",
    [None, "", "forged", RequestValidator("wrong-token").compute_signature("https://x", {})],
)
def test_an_unsigned_or_forged_webhook_is_a_403_and_changes_nothing(
    client, placed_call: Call, signature
) -> None:
    path = f"/webhooks/calls/{placed_call.pk}/status"
    headers = {} if signature is None else {"HTTP_X_TWILIO_SIGNATURE": signature}

    response = client.post(path, {"CallSid": CALL_SID, "CallStatus": "completed"}, **headers)

    assert response.status_code == 403
    assert response.json() == {"detail": "Invalid webhook signature."}
    placed_call.refresh_from_db()
    assert placed_call.status == "initiated"
    assert CallEvent.objects.count() == 0


def test_a_tampered_webhook_is_a_403(client, placed_call: Call) -> None:
    path = f"/webhooks/calls/{placed_call.pk}/status"
    url = "https://burki.test" + path
    signed = {"CallSid": CALL_SID, "CallStatus": "completed", "CallDuration": "1"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, signed)

    response = client.post(path, {**signed, "CallDuration": "0"}, HTTP_X_TWILIO_SIGNATURE=signature)

    assert response.status_code == 403
    placed_call.refresh_from_db()
    assert placed_call.status == "initiated"


def test_the_lifecycle_settles_the_exact_cost_once(
    client, tenant: Tenant, placed_call: Call
) -> None:
    path = f"/webhooks/calls/{placed_call.pk}/status"
    for status in ["initiated", "ringing", "in-progress"]:
        assert (
            signed_post(client, path, {"CallSid": CALL_SID, "CallStatus": status}).status_code
            == 200
        )
    completed = {"CallSid": CALL_SID, "CallStatus": "completed", "CallDuration": "125"}

    first = signed_post(client, path, completed)
    again = signed_post(client, path, completed)

    assert first.json() == {"detail": "Applied."}
    assert again.json() == {"detail": "Ignored: already applied."}
    settle_on_twilios_record(placed_call, "completed", "125")
    placed_call.refresh_from_db()
    # 125 s at 10 cents a minute = 20.83 cents, rounded up.
    assert (placed_call.status, placed_call.duration_seconds, placed_call.cost_cents) == (
        "completed",
        125,
        21,
    )
    assert placed_call.answered_at is not None and placed_call.ended_at is not None
    assert list(CallEvent.objects.filter(call=placed_call).values_list("status", flat=True)) == [
        "ringing",
        "in-progress",
        "completed",
    ]
    entries = LedgerEntry.objects.filter(call_id=placed_call.pk).order_by("id")
    assert [(e.kind, e.amount_cents, e.held_change_cents) for e in entries] == [
        ("hold", 0, 100),
        ("charge", -21, -21),
        ("release", 0, -79),
    ]
    balance = Balance.objects.get(organization=tenant.organization)
    assert (balance.balance_cents, balance.held_cents) == (10_000 - 21, 0)
    assert_money_consistent(tenant.organization)


def test_a_late_ringing_after_the_end_changes_nothing(client, placed_call: Call) -> None:
    path = f"/webhooks/calls/{placed_call.pk}/status"
    signed_post(client, path, {"CallSid": CALL_SID, "CallStatus": "busy"})
    settle_on_twilios_record(placed_call, "busy")

    response = signed_post(client, path, {"CallSid": CALL_SID, "CallStatus": "ringing"})

    assert response.json() == {"detail": "Ignored: already applied."}
    placed_call.refresh_from_db()
    assert (placed_call.status, placed_call.cost_cents) == ("busy", 0)


def test_a_status_for_an_unknown_call_is_acknowledged_and_ignored(client, db) -> None:
    response = client.post(
        "/webhooks/calls/00000000-0000-0000-0000-000000000000/status", {"CallStatus": "completed"}
    )

    assert response.status_code == 200
    assert response.json() == {"detail": "Ignored: unknown call."}


@responses.activate
def test_the_answer_webhook_of_a_failed_call_hangs_up_instead_of_connecting(
    tenant: Tenant, number
) -> None:
    responses.post(CALLS_URL, json={"code": 21215, "message": "Not permitted."}, status=400)
    assert initiate(tenant).status_code == 502
    call = Call.objects.get()
    assert call.status == "failed"

    response = signed_post(tenant.client, f"/webhooks/calls/{call.pk}/answer", {"CallSid": "CA1"})

    assert response.status_code == 200
    assert response.content.decode() == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Hangup /></Response>'
    )


@responses.activate
def test_a_call_twilio_placed_after_our_time_out_is_followed_and_billed(
    tenant: Tenant, number
) -> None:
    """Twilio accepted the call after we stopped waiting. The client is told the call may have
    been placed and which it is (not to dial again), the hold stays, and Twilio's webhooks for
    the call's own URL adopt it and settle it like any other."""
    import requests

    responses.post(CALLS_URL, body=requests.exceptions.ReadTimeout("read timed out"))

    response = initiate(tenant)

    call = Call.objects.get()
    assert response.status_code == 504
    assert response.json()["call_id"] == str(call.pk)
    assert "may have been placed" in response.json()["detail"]
    assert (call.status, call.call_sid) == ("unknown", "")
    path = f"/webhooks/calls/{call.pk}"
    answer = signed_post(tenant.client, f"{path}/answer", {"CallSid": CALL_SID})
    assert b"<Connect><Stream" in answer.content  # it is a real call: the assistant takes it
    for status in ("ringing", "in-progress"):
        signed_post(tenant.client, f"{path}/status", {"CallSid": CALL_SID, "CallStatus": status})
    call.refresh_from_db()
    assert (call.status, call.call_sid) == ("in-progress", CALL_SID)
    assert call.initiated_at is not None  # adopted: the sweep and a hang-up can name it now
    ended = {"CallSid": CALL_SID, "CallStatus": "completed", "CallDuration": "600"}
    assert signed_post(tenant.client, f"{path}/status", ended).json() == {"detail": "Applied."}
    responses.get(record_url(), json={"sid": CALL_SID, "status": "completed", "duration": "600"})
    assert call_settle_from_record(call_id=call.pk)

    call.refresh_from_db()
    assert (call.status, call.call_sid, call.duration_seconds, call.cost_cents) == (
        "completed",
        CALL_SID,
        600,
        100,
    )
    assert_money_consistent(tenant.organization)


@responses.activate
def test_a_webhook_naming_another_calls_provider_id_is_ignored_not_a_500(
    tenant: Tenant, number
) -> None:
    """A call we never learned the provider's id of is adopted by its first status webhook. One
    that names the id another of our calls already has (signed with the account's own token, so
    the organization can make one) was answered with a 500 from the unique constraint; it is
    ignored now, and neither call changes."""
    import requests

    responses.post(CALLS_URL, json=twilio_created(), status=201)
    assert initiate(tenant).status_code == 200
    placed = Call.objects.get()
    responses.replace(
        responses.POST, CALLS_URL, body=requests.exceptions.ReadTimeout("read timed out")
    )
    assert initiate(tenant).status_code == 504
    lost = Call.objects.exclude(pk=placed.pk).get()
    path = f"/webhooks/calls/{lost.pk}"

    ringing = signed_post(
        tenant.client, f"{path}/status", {"CallSid": CALL_SID, "CallStatus": "ringing"}
    )

    assert ringing.status_code == 200
    assert ringing.json() == {"detail": "Ignored: that provider call is another call's."}
    lost.refresh_from_db()
    placed.refresh_from_db()
    assert (lost.status, lost.call_sid) == ("unknown", "")
    assert (placed.status, placed.call_sid) == ("initiated", CALL_SID)
    assert (
        not CallEvent.objects.filter(call=lost).exclude(status__in=["queued", "unknown"]).exists()
    )
    assert_money_consistent(tenant.organization)


@responses.activate
def test_an_event_racing_past_that_check_changes_nothing_either(tenant: Tenant, number) -> None:
    """The webhook's check is not under a lock: an event that gets past it still meets the
    unique constraint, in a savepoint of its own, and is not applied."""
    import requests

    from calls.services import call_apply_event
    from telephony.providers.base import StatusEvent

    responses.post(CALLS_URL, json=twilio_created(), status=201)
    assert initiate(tenant).status_code == 200
    responses.replace(
        responses.POST, CALLS_URL, body=requests.exceptions.ReadTimeout("read timed out")
    )
    assert initiate(tenant).status_code == 504
    lost = Call.objects.get(call_sid="")
    events_before = CallEvent.objects.count()

    event = StatusEvent(state="ringing", provider_call_id=CALL_SID)
    assert call_apply_event(call=lost, event=event, source="twilio") is False

    lost.refresh_from_db()
    assert (lost.status, lost.call_sid) == ("unknown", "")
    assert CallEvent.objects.count() == events_before
    assert_money_consistent(tenant.organization)


class TestHangingUp:
    @responses.activate
    def test_a_call_twilio_has_not_confirmed_cannot_be_named_to_it_yet(
        self, tenant: Tenant, number
    ) -> None:
        import requests

        responses.post(CALLS_URL, body=requests.exceptions.ReadTimeout("read timed out"))
        call_id = initiate(tenant).json()["call_id"]

        response = tenant.client.post(f"/calls/{call_id}/hangup")

        assert (response.status_code, response.json()) == (
            409,
            {
                "detail": "This call cannot be ended yet: its provider has not confirmed it. "
                "Try again shortly."
            },
        )
        assert Call.objects.get().status == "unknown"

    @pytest.mark.parametrize("heard", ["initiated", "ringing"])
    @responses.activate
    def test_a_call_whose_answer_we_have_not_heard_of_is_still_hung_up(
        self, client, tenant: Tenant, number, heard: str
    ) -> None:
        """Twilio's Status=canceled does not affect a call in progress, and the callee may have
        answered while the answer's webhook is lost or on its way: Status=completed ends a
        call whatever its state."""
        responses.post(CALLS_URL, json=twilio_created(), status=201)
        call_id = initiate(tenant).json()["call_id"]
        if heard == "ringing":
            ringing = {"CallSid": CALL_SID, "CallStatus": "ringing"}
            signed_post(client, f"/webhooks/calls/{call_id}/status", ringing)
        assert Call.objects.get().status == heard
        update = responses.post(
            record_url(), json={"sid": CALL_SID, "status": "in-progress"}, status=200
        )

        response = tenant.client.post(f"/calls/{call_id}/hangup")

        assert response.status_code == 200, response.json()
        assert [parse_qs(c.request.body) for c in update.calls] == [{"Status": ["completed"]}]
        call = Call.objects.get()
        # Twilio's status callback (or the sweep) reports the end, as for any call.
        assert (call.status, call.cost_cents) == (heard, None)
        assert_money_consistent(tenant.organization)

    @responses.activate
    def test_a_refusal_is_a_502_that_changes_nothing(self, tenant: Tenant, number) -> None:
        responses.post(CALLS_URL, json=twilio_created(), status=201)
        call_id = initiate(tenant).json()["call_id"]
        responses.post(
            CALLS_URL.replace(".json", f"/{CALL_SID}.json"),
            json={"code": 21220, "message": "Call is not in-progress. Cannot redirect."},
            status=400,
        )

        response = tenant.client.post(f"/calls/{call_id}/hangup")

        assert (response.status_code, response.json()) == (
            502,
            {
                "detail": "The telephony provider could not end the call: Twilio refused: "
                "Call is not in-progress. Cannot redirect. (error 21220)"
            },
        )
        assert (Call.objects.get().status, Call.objects.get().cost_cents) == ("initiated", None)
        assert_money_consistent(tenant.organization)


@responses.activate
def test_a_connection_dropped_after_the_request_was_sent_is_unknown_not_failed(
    tenant: Tenant, number
) -> None:
    from http.client import RemoteDisconnected

    import requests
    import urllib3

    dropped = urllib3.exceptions.ProtocolError("Connection aborted.", RemoteDisconnected("x"))
    responses.post(CALLS_URL, body=requests.exceptions.ConnectionError(dropped))

    response = initiate(tenant)

    call = Call.objects.get()
    assert (response.status_code, response.json()["call_id"]) == (504, str(call.pk))
    assert (call.status, call.error, call.cost_cents) == (
        "unknown",
        "Twilio did not answer in time.",
        None,
    )
    assert_money_consistent(tenant.organization)
